"""``assert_parity``'s Adam check on a ported pair whose gradient is zero up to rounding.

A Conv with a bias followed by BatchNorm in train mode: BatchNorm subtracts the batch mean, so
the bias's gradient is zero in exact arithmetic and rounding (~1e-17) on either side. Adam
divides that rounding by eps (lr / eps = 1e5), so the two sides' biases step by different
noise, 3e-11 to 1.3e-10 a step (seeds 0-23; each step starts from the same weights on both
sides): the check judges that parameter by what Adam can resolve from the gradients,
and still fails where an Adam step really differs (a planted wrong beta on one side).
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
import torch
from torch import nn

import flax_arch.testing as testing
from flax_arch import port
from flax_arch._tolerances import ADAM_LR, adam_eps
from flax_arch.testing import assert_parity


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # a bias that BatchNorm cancels
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):  # (N, 3, H, W) -> (N, 4)
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def pair(seed: int):
    torch.manual_seed(seed)
    net = ConvBN().double().train()
    x = np.random.default_rng(seed).standard_normal((4, 3, 8, 8))
    return port(net, torch.from_numpy(x)), net, x


@pytest.mark.parametrize("seed", [1, 8])  # 8: a bias step differs by 1.3e-10
def test_bias_before_batchnorm_passes_adam(seed):
    flax_net, net, x = pair(seed)
    report = assert_parity(flax_net, net, x, train=True)
    # judged by what Adam resolves: the bias's step is noise over eps on both sides
    assert any(c.name.startswith("conv.bias after step") and "resolution" in c.name
               for c in report.comparisons)
    assert report.largest()["adam"].error <= 1e-10


def test_the_bias_steps_do_differ_beyond_tolerance(monkeypatch):
    """The case is real: compared plainly (no resolution), the biases after an Adam step
    differ by more than 1e-10 (seed 8: 1.3e-10 after the first)."""
    monkeypatch.setattr(testing._AdamResolution, "add", lambda *args: None)
    flax_net, net, x = pair(8)
    with pytest.raises(AssertionError, match=r"conv\.bias after step 1: error"):
        assert_parity(flax_net, net, x, train=True, checks=("adam",))


def test_a_wrong_adam_beta_still_fails(monkeypatch):
    """A real Adam bug next to the noise: the Flax side's beta1 is 0.5, torch's 0.9."""
    plain = testing._optax
    monkeypatch.setattr(testing, "_optax", lambda optimizer, dtype: optax.adam(
        ADAM_LR, b1=0.5, eps=adam_eps(dtype)) if optimizer == "adam" else plain(optimizer, dtype))
    flax_net, net, x = pair(1)
    with pytest.raises(AssertionError, match=r"check 'adam' failed") as err:
        assert_parity(flax_net, net, x, train=True, checks=("adam",))
    assert "conv.weight after step 2" in str(err.value)
