"""SEGAN's generator, from the "Skip connections: SEGAN" slides, as a PyTorch reference.

Pascual, Bonafonte and Serrà, "SEGAN: Speech Enhancement Generative Adversarial Network",
Interspeech 2017: a 1-D convolutional encoder-decoder over the raw waveform whose decoder
adds the encoder's feature maps (skip connections summed, as on the slide).
x: (batch, channels, length), torch's layout.

Fixed from the slides: the generator's loop variables are written with spaces (``enc fmap``,
``dec fmap``, ``enc layer``, ``dec layer``, ``skip h``, ``len(dec fmaps)``), which is not
Python; they are ``enc_fmap``, ``dec_fmap``, ``enc_layer``, ``dec_layer``, ``skip_h`` and
``len(dec_fmaps)`` here. ``enc_fmaps`` defaults to a tuple instead of a mutable list (and is
copied to a list before ``[::-1][1:] + [1]``), and the ``assert stride > 1`` checks are
ValueErrors, which ``python -O`` does not strip; a ``kwidth`` below 2, whose negative left
padding ``F.pad`` would turn into cropping, is rejected at construction; and the generator
checks that its input length lets every skip line up. Everything else (padding arithmetic,
the dropped last sample of odd kernels, ``hasattr(self, 'act')``) is the slide's.
"""

from torch import Tensor, nn
from torch.nn import functional as F


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


class DownConv1dBlock(nn.Module):
    """A strided convolution and a ReLU:
    (batch, ninp, length) -> (batch, fmap, ceil(length / stride)).

    The input is padded by ``kwidth // 2 - 1`` on the left and ``kwidth // 2`` on the right,
    so that a length divisible by ``stride`` is divided exactly (4000 -> 1000 for
    ``DownConv1dBlock(1, 1, 31, 4)``).
    """

    def __init__(self, ninp: int, fmap: int, kwidth: int, stride: int):
        super().__init__()
        _check_block("DownConv1dBlock", kwidth, stride)
        self.kwidth = kwidth
        self.conv = nn.Conv1d(ninp, fmap, kwidth, stride=stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # calculate padding with stride > 1
        pad_left = self.kwidth // 2 - 1
        pad_right = self.kwidth // 2
        xp = F.pad(x, (pad_left, pad_right))  # N x ninp x L + kwidth - 1
        y = self.act(self.conv(xp))  # N x fmap x ceil(L / stride)
        return y


class UpConv1dBlock(nn.Module):
    """A transposed convolution (and a ReLU when ``act``):
    (batch, ninp, length) -> (batch, fmap, length * stride).

    Padded by ``max(0, (stride - kwidth) // -2)``; an odd ``kwidth`` leaves one sample too
    many, which is dropped at the end (1000 -> 4000 for ``UpConv1dBlock(1, 1, 31, 4)``).
    """

    def __init__(self, ninp: int, fmap: int, kwidth: int, stride: int, act: bool = True):
        super().__init__()
        _check_block("UpConv1dBlock", kwidth, stride)
        self.kwidth = kwidth
        pad = max(0, (stride - kwidth) // -2)
        self.deconv = nn.ConvTranspose1d(ninp, fmap, kwidth,
                                         stride=stride,
                                         padding=pad)

        if act:
            self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.deconv(x)  # N x fmap x L * stride (+ 1 for an odd kwidth)
        if self.kwidth % 2 != 0:
            # drop last item for shape compatibility with TensorFlow deconvns
            h = h[:, :, :-1]  # N x fmap x L * stride
        if hasattr(self, 'act'):
            y = self.act(h)
        else:
            y = h
        return y


class Conv1dGenerator(nn.Module):
    """SEGAN's generator: strided ``DownConv1dBlock`` encoders, ``UpConv1dBlock`` decoders,
    each decoder input summed with the encoder output of the same length.

    x: (batch, 1, length) -> (batch, 1, length), length a multiple of
    ``pooling ** len(enc_fmaps)`` (8192 -> 8192 on the slide).
    """

    def __init__(self, enc_fmaps=(64, 128, 256, 512), kwidth: int = 31, pooling: int = 4):
        super().__init__()
        if not enc_fmaps or min(enc_fmaps) < 1:
            raise ValueError(f"Conv1dGenerator: enc_fmaps must be positive, got {enc_fmaps}")
        self.pooling, self.num_levels = pooling, len(enc_fmaps)
        self.enc = nn.ModuleList()
        ninp = 1
        for enc_fmap in enc_fmaps:
            self.enc.append(DownConv1dBlock(ninp, enc_fmap, kwidth, pooling))
            ninp = enc_fmap

        self.dec = nn.ModuleList()
        # revert encoder feature maps
        dec_fmaps = list(enc_fmaps)[::-1][1:] + [1]
        act = True
        for di, dec_fmap in enumerate(dec_fmaps, start=1):
            if di >= len(dec_fmaps):
                # last decoder layer has no activation
                act = False
            self.dec.append(UpConv1dBlock(ninp, dec_fmap, kwidth, pooling, act=act))
            ninp = dec_fmap

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"Conv1dGenerator expects an input of shape (batch, 1, length); "
                             f"got {tuple(x.shape)}")
        _check_length(x.shape[-1], self.pooling**self.num_levels)
        skips = []
        h = x  # N x 1 x 8192
        for ei, enc_layer in enumerate(self.enc, start=1):
            h = enc_layer(h)  # N x 64 x 2048, 128 x 512, 256 x 128, 512 x 32
            if ei < len(self.enc):
                skips.append(h)
        # now decode

        for di, dec_layer in enumerate(self.dec, start=1):
            if di > 1:
                # sum skip connection
                skip_h = skips.pop(-1)
                h = h + skip_h
            h = dec_layer(h)  # N x 256 x 128, 128 x 512, 64 x 2048, 1 x 8192
        y = h
        return y
