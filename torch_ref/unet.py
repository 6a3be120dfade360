"""U-Net, from the "Skip connections: U-Net" slide, as a PyTorch reference.

The slide shows only the figure of Ronneberger et al. 2015; this is the paper's network.
x: (batch, in_channels, height, width) -> (batch, num_classes, height', width') logits.

State tree (the same in :mod:`flax_arch.models.unet`): ``down.<i>`` the contracting path's double
convolutions, ``bottleneck``, ``up.<i>.upconv`` / ``up.<i>.conv`` the expanding path,
``head`` the final 1x1 convolution. Each ``DoubleConv`` is an ``nn.Sequential`` (conv ``0``,
ReLU ``1``, conv ``2``, ReLU ``3``).
"""

import itertools

import torch
from torch import Tensor, nn


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


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by a ReLU (no BatchNorm, as in the paper).

    (batch, in_channels, h, w) -> (batch, out_channels, h - 4, w - 4), or (h, w) with padding.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: bool = False):
        p = 1 if padding else 0
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=p),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=p),
            nn.ReLU(inplace=True),
        )


class UNetUp(nn.Module):
    """One step of the expanding path: a 2x2 stride-2 up-convolution halving the channels,
    concatenation with the centre crop of the encoder's map, then a double convolution.

    x: (batch, in_channels, h, w), skip: (batch, in_channels // 2, hs, ws) with hs >= 2h,
    ws >= 2w -> (batch, out_channels, 2h - 4, 2w - 4), or (2h, 2w) with padding.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: bool = False):
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.upconv(x)  # N x out x 2h x 2w
        h, w = x.shape[-2:]
        top, left = (skip.shape[-2] - h) // 2, (skip.shape[-1] - w) // 2
        skip = skip[..., top : top + h, left : left + w]  # N x out x 2h x 2w
        return self.conv(torch.cat([skip, x], dim=1))  # N x out x 2h-4 x 2w-4


class UNet(nn.Module):
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

    x: (batch, in_channels, height, width) -> (batch, num_classes, height', width') logits.
    The paper's dropout at the end of the contracting path (a data-augmentation detail) is
    left out.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 64,
                 depth: int = 4, padding: bool = False):
        super().__init__()
        if min(in_channels, num_classes, base_channels, depth) < 1:
            raise ValueError(
                f"UNet: in_channels, num_classes, base_channels and depth must be positive; got "
                f"{in_channels}, {num_classes}, {base_channels}, {depth}"
            )
        self.in_channels, self.depth, self.padding = in_channels, depth, padding
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        ninp = in_channels
        for width in widths[:-1]:
            self.down.append(DoubleConv(ninp, width, padding))
            ninp = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], padding)
        self.up = nn.ModuleList(
            UNetUp(widths[i + 1], widths[i], padding) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet expects an input of shape (batch, in_channels={self.in_channels}, "
                f"height, width); got {tuple(x.shape)}"
            )
        for axis, size in zip(("height", "width"), x.shape[-2:]):
            _check_size(axis, size, self.depth, self.padding)
        skips = []
        for down in self.down:  # paper: N x 1 x 572 x 572
            x = down(x)  # N x 64 x 568 x 568, 128 x 280, 256 x 136, 512 x 64
            skips.append(x)
            x = self.pool(x)  # N x 64 x 284 x 284, 128 x 140, 256 x 68, 512 x 32
        x = self.bottleneck(x)  # N x 1024 x 28 x 28
        for up in self.up:
            x = up(x, skips.pop())  # N x 512 x 52 x 52, 256 x 100, 128 x 196, 64 x 388
        return self.head(x)  # N x num_classes x 388 x 388
