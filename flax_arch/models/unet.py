"""U-Net, from the "Skip connections: U-Net" slide, in Flax NNX.

The slide shows only the figure of Ronneberger et al. 2015; this is the paper's network.
x: (batch, height, width, in_channels) -> (batch, height', width', num_classes) logits,
channels-last (torch's (batch, channels, height, width) moved).

State tree (the same as :mod:`torch_ref.unet`'s state_dict): ``down.<i>`` the contracting
path's double convolutions, ``bottleneck``, ``up.<i>.upconv`` / ``up.<i>.conv`` the
expanding path, ``head`` the final 1x1 convolution. Each ``DoubleConv`` is a ``Sequential``
(conv ``0``, ReLU ``1``, conv ``2``, ReLU ``3``).
"""

import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.nn import Conv2d, ConvTranspose2d, MaxPool2d, ReLU, Sequential

__all__ = ["DoubleConv", "UNetUp", "UNet", "unet_output_size"]


def unet_output_size(size: int, depth: int, padding: bool) -> int | None:
    """The U-Net's output size along one spatial axis, or None where ``size`` does not fit.

    Unpadded, each 3x3 convolution takes 2 pixels off, every 2x2 max-pooling must see an
    even size, and every map must keep at least one pixel. Padded ("same"), the size must be
    a multiple of ``2 ** depth`` and comes out unchanged.
    """
    if padding:
        return size if size > 0 and size % 2**depth == 0 else None
    for _ in range(depth):  # contracting path: double conv, then pool
        size -= 4
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4  # bottleneck
    for _ in range(depth):  # expanding path: up-conv doubles, double conv takes 4
        if size < 1:
            return None
        size = 2 * size - 4
    return size if size >= 1 else None


def _check_size(axis: str, size: int, depth: int, padding: bool) -> None:
    """Raises a ValueError naming the valid sizes nearest to ``size``."""
    def fits(s: int) -> bool:
        return unet_output_size(s, depth, padding) is not None

    if fits(size):
        return
    above = next(s for s in itertools.count(size + 1) if fits(s))
    below = next((s for s in range(size - 1, 0, -1) if fits(s)), None)
    if padding:
        rule = f"a multiple of 2**depth = {2**depth}"
    else:
        smallest = next(s for s in itertools.count(1) if fits(s))
        rule = (f"{2**depth} * k + {4 * (2**depth - 1)} (every max-pooling sees an even size) "
                f"and at least {smallest}")
    nearest = f"{below} and {above}" if below is not None else f"{above}"
    raise ValueError(
        f"UNet(depth={depth}, padding={padding}) cannot take {axis} {size}: it must be {rule}; "
        f"the nearest valid {axis}s are {nearest}"
    )


class DoubleConv(Sequential):
    """Two 3x3 convolutions, each followed by a ReLU (no BatchNorm, as in the paper).

    (batch, h, w, in_channels) -> (batch, h - 4, w - 4, out_channels), or (h, w) with padding.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: bool = False, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(padding=1 if padding else 0, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        super().__init__(
            Conv2d(in_channels, out_channels, 3, **kw),
            ReLU(inplace=True),
            Conv2d(out_channels, out_channels, 3, **kw),
            ReLU(inplace=True),
        )


class UNetUp(nnx.Module):
    """One step of the expanding path: a 2x2 stride-2 up-convolution halving the channels,
    concatenation with the centre crop of the encoder's map, then a double convolution.

    x: (batch, h, w, in_channels), skip: (batch, hs, ws, in_channels // 2) with hs >= 2h,
    ws >= 2w -> (batch, 2h - 4, 2w - 4, out_channels), or (2h, 2w) with padding.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: bool = False, *,
                 rngs: nnx.Rngs, dtype=None, param_dtype=jnp.float32):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.upconv = ConvTranspose2d(in_channels, out_channels, 2, stride=2, **kw)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding, **kw)

    def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        x = self.upconv(x)  # N x 2h x 2w x out
        h, w = x.shape[-3:-1]
        top, left = (skip.shape[-3] - h) // 2, (skip.shape[-2] - w) // 2
        skip = skip[..., top : top + h, left : left + w, :]  # N x 2h x 2w x out
        return self.conv(jnp.concatenate([skip, x], axis=-1))  # N x 2h-4 x 2w-4 x out


class UNet(nnx.Module):
    """U-Net (Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical
    Image Segmentation", MICCAI 2015).

    Args:
        in_channels: channels of the input image (1 in the paper).
        num_classes: output channels of the final 1x1 convolution (2 in the paper).
        base_channels: channels of the first level, doubled at every level down (64).
        depth: number of 2x2 max-poolings (4).
        padding: False is the paper's network (unpadded 3x3 convolutions, 572x572 in ->
            388x388 out; valid sizes are ``2**depth * k + 4 * (2**depth - 1)``, k >= 8 for
            depth >= 2, so that every max-pooling sees an even size); True pads them
            ("same"): the output has the input's size, a multiple of ``2**depth``.

    x: (batch, height, width, in_channels) -> (batch, height', width', num_classes) logits.
    The paper's dropout at the end of the contracting path (a data-augmentation detail) is
    left out.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 64,
                 depth: int = 4, padding: bool = False, *, rngs: nnx.Rngs, dtype=None,
                 param_dtype=jnp.float32):
        if min(in_channels, num_classes, base_channels, depth) < 1:
            raise ValueError(
                f"UNet: in_channels, num_classes, base_channels and depth must be positive; got "
                f"{in_channels}, {num_classes}, {base_channels}, {depth}"
            )
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.in_channels, self.depth, self.padding = in_channels, depth, padding
        widths = [base_channels * 2**i for i in range(depth + 1)]
        down = []
        ninp = in_channels
        for width in widths[:-1]:
            down.append(DoubleConv(ninp, width, padding, **kw))
            ninp = width
        self.down = nnx.List(down)
        self.pool = MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], padding, **kw)
        self.up = nnx.List(
            [UNetUp(widths[i + 1], widths[i], padding, **kw) for i in reversed(range(depth))]
        )
        self.head = Conv2d(base_channels, num_classes, 1, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"UNet expects a channels-last input of shape (batch, height, width, "
                f"in_channels={self.in_channels}); got {tuple(x.shape)}"
            )
        for axis, size in zip(("height", "width"), x.shape[1:3]):
            _check_size(axis, size, self.depth, self.padding)
        skips = []
        for down in self.down:  # paper: N x 572 x 572 x 1
            x = down(x)  # N x 568 x 568 x 64, 280 x 128, 136 x 256, 64 x 512
            skips.append(x)
            x = self.pool(x)  # N x 284 x 284 x 64, 140 x 128, 68 x 256, 32 x 512
        x = self.bottleneck(x)  # N x 28 x 28 x 1024
        for up in self.up:
            x = up(x, skips.pop())  # N x 52 x 52 x 512, 100 x 256, 196 x 128, 388 x 64
        return self.head(x)  # N x 388 x 388 x num_classes
