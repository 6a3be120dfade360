"""state_dict interop: strict errors that leave the model untouched, non-strict reports,
dtype casting, torch tensors and NumPy arrays alike, and layout helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import torch_ref
from flax_arch import nn


def snapshot(model):
    return {k: v.copy() for k, v in flax_arch.torch_state_dict(model).items()}


def assert_unchanged(model, before):
    after = flax_arch.torch_state_dict(model)
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_strict_load_names_every_problem_and_leaves_the_model_unchanged():
    model = flax_arch.MLP(4, 8, 3, rngs=nnx.Rngs(0))
    before = snapshot(model)
    sd = dict(torch_ref.MLP(4, 8, 3).state_dict())
    del sd["2.bias"]                              # missing
    sd["5.weight"] = torch.zeros(3)               # unexpected
    sd["4.weight"] = torch.zeros(3, 9)            # mis-shaped (expected (3, 8))
    sd["0.weight"] = torch.ones(8, 4) * 7         # valid, and must not be written either
    with pytest.raises(flax_arch.StateDictError) as info:
        flax_arch.load_torch_state_dict(model, sd)
    msg = str(info.value)
    assert "missing keys (1): 2.bias" in msg
    assert "unexpected keys (1): 5.weight" in msg
    assert "4.weight: got (3, 9), expected (3, 8)" in msg
    assert info.value.missing_keys == ["2.bias"]
    assert_unchanged(model, before)


def test_non_strict_load_loads_what_fits_and_reports_the_rest():
    model = flax_arch.MLP(4, 8, 3, rngs=nnx.Rngs(0))
    before = snapshot(model)
    ref = torch_ref.MLP(4, 8, 3)
    sd = dict(ref.state_dict())
    del sd["2.bias"]
    sd["4.weight"] = torch.zeros(3, 9)
    sd["extra"] = torch.zeros(1)
    report = flax_arch.load_torch_state_dict(model, sd, strict=False)
    assert report.missing_keys == ["2.bias"]
    assert report.unexpected_keys == ["extra"]
    assert [k for k, *_ in report.mismatched_keys] == ["4.weight"]
    after = flax_arch.torch_state_dict(model)
    np.testing.assert_array_equal(after["0.weight"], ref.state_dict()["0.weight"].numpy())
    np.testing.assert_array_equal(after["2.bias"], before["2.bias"])
    np.testing.assert_array_equal(after["4.weight"], before["4.weight"])


def test_numpy_state_dicts_load_and_values_are_cast_to_the_models_dtype():
    model = nn.Linear(3, 2, rngs=nnx.Rngs(0))
    w = np.arange(6, dtype=np.float64).reshape(2, 3)
    flax_arch.load_torch_state_dict(model, {"weight": w, "bias": np.ones(2)})
    assert model.weight[...].dtype == jnp.float32
    np.testing.assert_array_equal(model.weight[...], w.T.astype(np.float32))


def test_loaded_weights_do_not_alias_torch_memory():
    """torch's in-place optimizer updates must not reach into a JAX array."""
    t = torch.nn.Linear(3, 2)
    model = nn.Linear(3, 2, rngs=nnx.Rngs(0))
    flax_arch.load_torch_state_dict(model, t.state_dict())
    before = np.asarray(model.bias[...]).copy()
    with torch.no_grad():
        t.bias.add_(1.0)
    np.testing.assert_array_equal(model.bias[...], before)


def test_bfloat16_tensors_load():
    t = torch.nn.Linear(3, 2).to(torch.bfloat16)
    model = nn.Linear(3, 2, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16)
    flax_arch.load_torch_state_dict(model, t.state_dict())
    np.testing.assert_array_equal(np.asarray(model.weight[...], np.float32),
                                  t.weight.detach().float().numpy().T)


def test_round_trip_includes_batchnorm_buffers_bit_identically():
    t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    t(torch.randn(2, 3, 6, 6))  # moves the running statistics off their initial values
    f = nn.Sequential(nn.Conv2d(3, 4, 3, rngs=nnx.Rngs(0)), nn.BatchNorm2d(4))
    flax_arch.load_torch_state_dict(f, t.state_dict())
    back = flax_arch.torch_state_dict(f)
    assert set(back) == set(t.state_dict())
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    assert int(back["1.num_batches_tracked"]) == 1


def test_gradients_convert_to_torch_names_and_layouts():
    f = nn.Conv1d(2, 3, 4, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 5, 2)))))(f)
    out = flax_arch.torch_state_dict(f, grads)
    assert out["weight"].shape == (3, 2, 4) and out["bias"].shape == (3,)


@pytest.mark.parametrize("layout,shape,flax_shape", [
    ("NCL", (2, 3, 5), (2, 5, 3)), ("NCHW", (2, 3, 4, 5), (2, 4, 5, 3)),
    ("NC", (2, 3), (2, 3)), ("LNC", (4, 2, 3), (4, 2, 3)),
])
def test_layout_helpers_are_inverse(layout, shape, flax_shape):
    x = np.random.default_rng(0).standard_normal(shape)
    y = flax_arch.to_channels_last(x, layout)
    assert y.shape == flax_shape
    np.testing.assert_array_equal(flax_arch.to_channels_first(y, layout), x)


def test_an_uninitialised_model_takes_torch_weights_like_an_initialised_one():
    """Built abstractly: zeros for parameters and buffers, random keys from the seed, the same
    state tree; after loading torch's weights it computes what an eagerly built model does."""
    torch_model = torch_ref.get_model("vae")
    build = lambda: flax_arch.get_model("vae", rngs=nnx.Rngs(3))  # noqa: E731: Stochastic
    eager, abstract = build(), flax_arch.uninitialised(build, seed=3)
    assert jax.tree.structure(nnx.state(abstract)) == jax.tree.structure(nnx.state(eager))
    assert all(not np.any(np.asarray(v)) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    for model in (eager, abstract):
        flax_arch.load_torch_state_dict(model, torch_model.state_dict())
        # device arrays, not NumPy ones a compiled call would copy in again at every call
        assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(nnx.state(model)))
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    eps = np.random.default_rng(1).standard_normal((2, 20)).astype(np.float32)
    for a, b in zip(jax.tree.leaves(eager(x, eps=eps)), jax.tree.leaves(abstract(x, eps=eps))):
        np.testing.assert_array_equal(a, b)
