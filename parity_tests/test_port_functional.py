"""The functional ops that model zoos call directly (F.batch_norm in a fused BatchNorm-act,
F.group_norm, F.normalize, torch.roll, cumsum, arange, addcmul, new_zeros / new_empty,
bernoulli_ in a drop path), ported and proven equal with ``assert_parity`` in train mode:
outputs, running statistics written back, gradients, SGD and Adam steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from flax_arch import port, torch_state_dict
from flax_arch.testing import assert_parity


class FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)  # (a bias before BatchNorm: test_port_adam)
        self.bn = nn.BatchNorm2d(4)  # called through F.batch_norm, as timm's BatchNormAct2d
        self.gn = nn.GroupNorm(2, 4)

    def forward(self, x):  # (N, 3, H, W) -> (N, 4, H - 2, W - 2)
        y = self.conv(x)
        y = F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight,
                         self.bn.bias, self.training, 0.1, 1e-5)
        y = F.group_norm(y, 2, self.gn.weight, self.gn.bias, 1e-5)
        y = F.normalize(y, dim=1) + torch.roll(y, 1, 2)
        y = torch.addcmul(y, y, y, value=0.5).cumsum(3)
        return y + torch.arange(y.shape[-1], dtype=y.dtype) + y.new_zeros(1)


@pytest.mark.parametrize("train", [True, False])
def test_functional_ops_match_in_both_modes(train):
    torch.manual_seed(0)
    net = FunctionalNet().double().train(train)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    report = assert_parity(port(net, torch.from_numpy(x)), net, x, train=train)
    # F.batch_norm's running statistics were written back, and compared after every step
    assert any(c.name.startswith("bn.running_var after") for c in report.comparisons)


def test_running_statistics_move_only_in_train_mode():
    torch.manual_seed(0)
    net = FunctionalNet().double().train()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ported = port(net, x)
    ported(np.moveaxis(x.numpy(), 1, -1))
    moved = torch_state_dict(ported)["bn.running_mean"]
    assert np.abs(moved).max() > 0
    ported.eval()
    ported(np.moveaxis(x.numpy(), 1, -1))
    np.testing.assert_array_equal(torch_state_dict(ported)["bn.running_mean"], moved)


class DropPath(nn.Module):
    """timm's drop_path: a per-sample mask from new_empty(...).bernoulli_(keep)."""

    def forward(self, x):  # (N, C)
        if not self.training:
            return x
        mask = x.new_empty((x.shape[0], 1)).bernoulli_(0.5)
        return x * mask.div_(0.5)


def test_drop_path_draws_from_the_held_rngs():
    x = np.ones((64, 3))
    ported = port(DropPath().train(), torch.from_numpy(x), rngs=nnx.Rngs(0))
    out = np.asarray(ported(x))
    rows = set(map(tuple, out))
    assert rows == {(0.0, 0.0, 0.0), (2.0, 2.0, 2.0)}  # whole rows dropped or scaled by 2
    assert 16 < np.sum(out[:, 0] == 0) < 48
    ported.eval()
    np.testing.assert_array_equal(ported(x), x)


class TorchBatchNorm(nn.Module):
    """torch.batch_norm, ATen's argument order (weight and bias before the statistics), as
    timm's TF-ported EfficientNetV2 calls it."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        bn = self.bn
        return torch.batch_norm(x, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                self.training, 0.1, 1e-3, False)


@pytest.mark.parametrize("train", [True, False])
def test_torch_batch_norm_takes_atens_argument_order(train):
    torch.manual_seed(0)
    net = TorchBatchNorm().double().train(train)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    report = assert_parity(port(net, torch.from_numpy(x)), net, x, train=train,
                           checks=("forward", "grad"))
    assert any(c.name.startswith("bn.running_var after") for c in report.comparisons)
