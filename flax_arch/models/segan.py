"""SEGAN's generator, from the "Skip connections: SEGAN" slides, in Flax NNX.

Pascual, Bonafonte and Serrà, "SEGAN: Speech Enhancement Generative Adversarial Network",
Interspeech 2017: a 1-D convolutional encoder-decoder over the raw waveform whose decoder
adds the encoder's feature maps (skip connections summed, as on the slide).
x: (batch, length, channels), channels-last (torch's (batch, channels, length) moved).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Conv1d, ConvTranspose1d, ReLU

__all__ = ["DownConv1dBlock", "UpConv1dBlock", "Conv1dGenerator"]


def _check_block(name: str, kwidth: int, stride: int) -> None:
    if stride <= 1:
        raise ValueError(f"{name}: stride must be > 1 (a strided block), got {stride}")
    if kwidth < 2:
        raise ValueError(f"{name}: kwidth must be >= 2 (its padding is kwidth // 2 - 1 on the "
                         f"left), got {kwidth}")


def _check_length(length: int, multiple: int) -> None:
    """The skips line up only if every encoder divides its length by ``pooling`` exactly."""
    if length % multiple:
        below = length // multiple * multiple
        nearest = f"{below} and {below + multiple}" if below else f"{multiple}"
        raise ValueError(
            f"Conv1dGenerator: the length must be a multiple of pooling ** len(enc_fmaps) = "
            f"{multiple}, got {length}; the nearest valid lengths are {nearest}"
        )


class DownConv1dBlock(nnx.Module):
    """A strided convolution and a ReLU:
    (batch, length, ninp) -> (batch, ceil(length / stride), fmap).

    The input is padded by ``kwidth // 2 - 1`` on the left and ``kwidth // 2`` on the right,
    so that a length divisible by ``stride`` is divided exactly (4000 -> 1000 for
    ``DownConv1dBlock(1, 1, 31, 4)``).
    """

    def __init__(self, ninp: int, fmap: int, kwidth: int, stride: int, *, rngs: nnx.Rngs,
                 dtype=None, param_dtype=jnp.float32):
        _check_block("DownConv1dBlock", kwidth, stride)
        self.kwidth = kwidth
        self.conv = Conv1d(ninp, fmap, kwidth, stride=stride, rngs=rngs, dtype=dtype,
                           param_dtype=param_dtype)
        self.act = ReLU(inplace=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"DownConv1dBlock expects a channels-last input of shape (batch, "
                             f"length, ninp={self.conv.in_channels}); got {tuple(x.shape)}")
        # calculate padding with stride > 1
        pad_left = self.kwidth // 2 - 1
        pad_right = self.kwidth // 2
        xp = jnp.pad(x, [(0, 0), (pad_left, pad_right), (0, 0)])  # N x L + kwidth - 1 x ninp
        y = self.act(self.conv(xp))  # N x ceil(L / stride) x fmap
        return y


class UpConv1dBlock(nnx.Module):
    """A transposed convolution (and a ReLU when ``act``):
    (batch, length, ninp) -> (batch, length * stride, fmap).

    Padded by ``max(0, (stride - kwidth) // -2)``; an odd ``kwidth`` leaves one sample too
    many, which is dropped at the end (1000 -> 4000 for ``UpConv1dBlock(1, 1, 31, 4)``).
    ``act`` is ``None`` where the torch block has no ``act`` attribute (a ReLU has no
    variables, so the state trees agree either way).
    """

    def __init__(self, ninp: int, fmap: int, kwidth: int, stride: int, act: bool = True, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        _check_block("UpConv1dBlock", kwidth, stride)
        self.kwidth = kwidth
        pad = max(0, (stride - kwidth) // -2)
        self.deconv = ConvTranspose1d(ninp, fmap, kwidth,
                                      stride=stride,
                                      padding=pad, rngs=rngs, dtype=dtype,
                                      param_dtype=param_dtype)
        self.act = ReLU(inplace=True) if act else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"UpConv1dBlock expects a channels-last input of shape (batch, "
                             f"length, ninp={self.deconv.in_channels}); got {tuple(x.shape)}")
        h = self.deconv(x)  # N x L * stride (+ 1 for an odd kwidth) x fmap
        if self.kwidth % 2 != 0:
            # drop last item for shape compatibility with TensorFlow deconvns
            h = h[:, :-1, :]  # N x L * stride x fmap
        if self.act is not None:
            y = self.act(h)
        else:
            y = h
        return y


class Conv1dGenerator(nnx.Module):
    """SEGAN's generator: strided ``DownConv1dBlock`` encoders, ``UpConv1dBlock`` decoders,
    each decoder input summed with the encoder output of the same length.

    x: (batch, length, 1) -> (batch, length, 1), length a multiple of
    ``pooling ** len(enc_fmaps)`` (8192 -> 8192 on the slide).
    """

    def __init__(self, enc_fmaps=(64, 128, 256, 512), kwidth: int = 31, pooling: int = 4, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        if not enc_fmaps or min(enc_fmaps) < 1:
            raise ValueError(f"Conv1dGenerator: enc_fmaps must be positive, got {enc_fmaps}")
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.pooling, self.num_levels = pooling, len(enc_fmaps)
        enc = []
        ninp = 1
        for enc_fmap in enc_fmaps:
            enc.append(DownConv1dBlock(ninp, enc_fmap, kwidth, pooling, **kw))
            ninp = enc_fmap
        self.enc = nnx.List(enc)

        dec = []
        # revert encoder feature maps
        dec_fmaps = list(enc_fmaps)[::-1][1:] + [1]
        act = True
        for di, dec_fmap in enumerate(dec_fmaps, start=1):
            if di >= len(dec_fmaps):
                # last decoder layer has no activation
                act = False
            dec.append(UpConv1dBlock(ninp, dec_fmap, kwidth, pooling, act=act, **kw))
            ninp = dec_fmap
        self.dec = nnx.List(dec)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3 or x.shape[-1] != 1:
            raise ValueError(f"Conv1dGenerator expects a channels-last input of shape (batch, "
                             f"length, 1); got {tuple(x.shape)}")
        _check_length(x.shape[1], self.pooling**self.num_levels)
        skips = []
        h = x  # N x 8192 x 1
        for ei, enc_layer in enumerate(self.enc, start=1):
            h = enc_layer(h)  # N x 2048 x 64, 512 x 128, 128 x 256, 32 x 512
            if ei < len(self.enc):
                skips.append(h)
        # now decode

        for di, dec_layer in enumerate(self.dec, start=1):
            if di > 1:
                # sum skip connection
                skip_h = skips.pop(-1)
                h = h + skip_h
            h = dec_layer(h)  # N x 128 x 256, 512 x 128, 2048 x 64, 8192 x 1
        y = h
        return y
