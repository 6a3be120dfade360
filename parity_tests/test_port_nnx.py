"""A ported model is an ordinary NNX module: it holds its randomness like ``nnx.Dropout``
(a call's ``rngs`` still wins), and ``nnx.jit``, ``nnx.grad``, ``nnx.split`` / ``nnx.merge``
and an Orbax checkpoint round trip work on it, with torch's numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from flax_arch import port, torch_state_dict

TOL = 1e-10


class Net(nn.Module):
    """A leaf Dropout and a functional dropout (both draw in train mode), and a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(8, 3)

    def forward(self, x):  # (N, 6) -> (N, 3)
        h = self.drop(torch.relu(self.bn(self.fc(x))))
        return self.out(F.dropout(h, 0.25, self.training))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().double()


X = np.random.default_rng(0).standard_normal((5, 6))


def test_held_rngs_feed_train_mode_and_a_call_may_override(net):
    a = port(net.train(), torch.from_numpy(X), rngs=nnx.Rngs(0))
    b = port(net, torch.from_numpy(X), rngs=nnx.Rngs(0))
    first = a(X)
    np.testing.assert_array_equal(first, b(X))  # the same seed, the same masks
    # a call's rngs wins (the same key, the same masks), and leaves the held stream alone
    overridden = a(X, rngs=nnx.Rngs(7))
    np.testing.assert_array_equal(overridden, b(X, rngs=nnx.Rngs(7)))
    assert not np.allclose(overridden, first)
    second = a(X)
    assert not np.allclose(first, second)  # the held stream advances, as nnx.Dropout's
    np.testing.assert_array_equal(second, b(X))


def test_without_rngs_train_mode_says_where_to_give_them(net):
    ported = port(net.train(), torch.from_numpy(X))
    with pytest.raises(ValueError, match=r"port the model with rngs=nnx\.Rngs"):
        ported(X)
    ported = port(net.eval(), torch.from_numpy(X))  # eval mode draws nothing
    np.testing.assert_allclose(ported(X), net(torch.from_numpy(X)).detach().numpy(),
                               rtol=0, atol=TOL)


def test_nnx_jit_in_train_mode_advances_the_held_stream(net):
    ported = port(net.train(), torch.from_numpy(X), rngs=nnx.Rngs(0))
    twin = port(net, torch.from_numpy(X), rngs=nnx.Rngs(0))
    step = nnx.jit(lambda m, x: m(x))
    first, second = step(ported, X), step(ported, X)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(first, twin(X), rtol=0, atol=TOL)  # jit = eager, same keys
    np.testing.assert_allclose(second, twin(X), rtol=0, atol=TOL)
    # BatchNorm's running statistics were updated by both jitted calls, as torch's would be
    net(torch.from_numpy(X)), net(torch.from_numpy(X))
    np.testing.assert_allclose(ported.bn.running_mean[...], net.bn.running_mean.numpy(),
                               rtol=0, atol=TOL)


def test_nnx_grad_is_torchs_gradient(net):
    net.eval()
    ported = port(net, torch.from_numpy(X))
    cot = np.random.default_rng(1).standard_normal((5, 3))
    grads = nnx.grad(lambda m: jnp.sum(m(X) * cot))(ported)
    x = torch.from_numpy(X)
    (net(x) * torch.from_numpy(cot)).sum().backward()
    ours = torch_state_dict(ported, grads)
    assert set(ours) == {k for k, _ in net.named_parameters()}
    for key, p in net.named_parameters():
        np.testing.assert_allclose(ours[key], p.grad.numpy(), rtol=0, atol=TOL, err_msg=key)


def test_split_merge_and_orbax_round_trip(net, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    net.eval()
    ported = port(net, torch.from_numpy(X), rngs=nnx.Rngs(0))
    expected = ported(X)
    graphdef, state = nnx.split(ported)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    np.testing.assert_array_equal(forward(state, X), expected)

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", nnx.to_pure_dict(state))
    checkpointer.wait_until_finished()
    for p in net.parameters():  # other weights, then the checkpoint's
        torch.nn.init.zeros_(p)
    fresh = port(net, torch.from_numpy(X), rngs=nnx.Rngs(1))
    graphdef2, abstract = nnx.split(fresh)
    restored = checkpointer.restore(tmp_path / "ckpt", nnx.to_pure_dict(abstract))
    nnx.replace_by_pure_dict(abstract, restored)
    loaded = nnx.merge(graphdef2, abstract)
    np.testing.assert_array_equal(loaded(X), expected)
    ref = torch_state_dict(ported)
    for key, value in torch_state_dict(loaded).items():
        np.testing.assert_array_equal(value, ref[key], err_msg=key)
