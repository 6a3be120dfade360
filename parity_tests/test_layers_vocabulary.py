"""The port's vocabulary beyond module_db's samples: layers it has no samples of (Upsample,
PixelShuffle, Flatten, Hardsigmoid, the channel dropouts), and the cases that decide
torch's exact semantics (kinks and NaN, tied maxima and their indices, negative padding,
running statistics over several steps, empty batches, dim=None, refusals), each against
torch itself with the module_db test's check (float64, 1e-10), or torch's statistics where
the layer is random. Each sweep of cases runs as one compiled program, a mismatch naming its case.
"""

from __future__ import annotations

import inspect
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import flax_arch.models.recurrent as recurrent
from flax_arch import nn
from parity_tests.test_module_db import (RECURRENT, TWINS, Twin, assert_close, build,
                                         check_twin, check_twins, to_flax)

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.standard_normal(shape)


def batched(name, ndim):  # a batched (N, C, *spatial) torch input of any rank
    return 1 if ndim >= 3 else None


def train_check(name, args, kwargs, x, **kw):
    check_twin(name, "train", args, kwargs, [x], **kw)


def call(name, args=(), kwargs=None):
    """The constructor call as Python writes it, e.g. ``MaxPool1d(3, stride=2)``."""
    words = [*map(repr, args), *(f"{k}={v!r}" for k, v in (kwargs or {}).items())]
    return f"{name}({', '.join(words)})"


def twin(name, args, kwargs, x, mode="train", **kw):
    """A :class:`Twin` of a one-input call, labelled with the call and the input's shape."""
    return Twin(name, mode, args, kwargs, [x], label=f"{call(name, args, kwargs)} {mode} on "
                f"{np.shape(x)}", **kw)


# ----------------------------------------------------------------------------- activations

# Each layer at its kinks (where torch's gradient picks a side) and far out (no overflow in
# the branch not taken, nor in its gradient).
KINKS = [
    ("ReLU6", (), [0.0, 6.0]), ("Hardtanh", (-1.0, 1.0), [-1.0, 1.0]),
    ("Hardtanh", (-0.5, 2.0), [-0.5, 2.0]), ("Hardsigmoid", (), [-3.0, 3.0]),
    ("Hardswish", (), [-3.0, 3.0]), ("Hardshrink", (0.5,), [-0.5, 0.5]),
    ("Softshrink", (0.5,), [-0.5, 0.5]), ("Threshold", (0.1, 20.0), [0.1]),
    ("ELU", (2.0,), [0.0]), ("CELU", (0.5,), [0.0]), ("SELU", (), [0.0]),
    ("PReLU", (), [0.0]), ("LeakyReLU", (0.2,), [0.0]), ("Softplus", (2.0, 1.0), [0.5]),
    ("Mish", (), [20.0]), ("GELU", ("tanh",), [0.0]), ("SiLU", (), [0.0]),
    ("LogSigmoid", (), [0.0]), ("Softsign", (), [0.0]), ("Tanhshrink", (), [0.0]),
]


def _hardsigmoid_exact(leaves, cots):
    """The exact gradient: 1/6 strictly inside (-3, 3). torch's float64 backward multiplies
    by 1/6 rounded to float32 (3e-8 relative): compared with the mathematics instead."""
    (x,), (g,) = leaves, cots
    return [g * ((x > -3) & (x < 3)) / 6]


def test_activation_at_kinks_and_far_out():
    twins = []
    for name, args, kinks in KINKS:
        x = np.concatenate([np.resize(kinks, 2), [-800.0, -30.0, 30.0, 800.0], normal(12) * 4])
        exact = _hardsigmoid_exact if name == "Hardsigmoid" else None
        twins.append(twin(name, args, {}, x.reshape(2, 3, -1), exact_input_grads=exact))
    check_twins(twins)


def test_torch_hardsigmoid_gradient_is_rounded_to_float32():
    """Why the test above compares Hardsigmoid's gradient with the exact 1/6."""
    x = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.Hardsigmoid()(x).sum(), x)
    assert g.item() == float(np.float32(1 / 6)) != 1 / 6
    y = jax.grad(lambda v: nn.Hardsigmoid()(v).sum())(jnp.asarray([0.3]))
    assert float(y[0]) == 1 / 6


@pytest.mark.parametrize("name,args", [(n, a) for n, a, _ in KINKS if n != "PReLU"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_activation_propagates_nan_as_torch(name, args):
    x = np.array([np.nan, -1.0, 0.0, 1.0, np.inf, -np.inf])
    ref = getattr(torch.nn, name)(*args)(torch.from_numpy(x)).numpy()
    ours = np.asarray(TWINS[name](*args)(jnp.asarray(x)))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-15)


def test_softmax_dim_none_is_torchs_channel_axis():
    """torch's implicit dim (0 for 0-, 1- and 3-D, else 1) is its channel axis; here the
    channels are last, where dim=None reads (Softmax, Softmin and LogSoftmax, ranks 0 to 4)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: implicit dim is deprecated
        twins = []
        for name in ("Softmax", "Softmin", "LogSoftmax"):
            for ndim in range(5):
                torch_axis = {3: 0, 4: 1}.get(ndim)
                twins.append(twin(name, (), {"dim": None}, normal(*(2, 3, 4, 5)[:ndim]),
                                  channel=lambda n, d, axis=torch_axis: axis))
        check_twins(twins)


def test_prelu_per_channel_is_the_last_axis():
    train_check("PReLU", (3,), {"init": 0.1}, normal(2, 3, 4, 5))  # moved to (2, 4, 5, 3)
    with pytest.raises(ValueError, match=r"channels-last input \(\*, 3\)"):
        nn.PReLU(3)(jnp.ones((2, 3, 4)))


def test_glu_refuses_an_odd_axis():
    with pytest.raises(ValueError, match="even size"):
        nn.GLU()(jnp.ones((2, 5)))


# ----------------------------------------------------------------------------- pooling


TIED_POOLS = [  # (name, kwargs, shape)
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), (2, 3, 9)),
    ("MaxPool1d", dict(kernel_size=2, dilation=3, ceil_mode=True, return_indices=True), (2, 3, 10)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), (2, 3, 9, 8)),
    ("MaxPool2d", dict(kernel_size=(2, 3), stride=(2, 1), dilation=(2, 1), ceil_mode=True,
                       return_indices=True), (2, 3, 9, 7)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, return_indices=True), (3, 9, 8)),
    ("MaxPool3d", dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, return_indices=True),
     (2, 3, 5, 4, 5)),
    ("AdaptiveMaxPool1d", dict(output_size=4, return_indices=True), (2, 3, 10)),
    ("AdaptiveMaxPool2d", dict(output_size=(3, 4), return_indices=True), (2, 3, 7, 9)),
    ("AdaptiveMaxPool2d", dict(output_size=(None, 2), return_indices=True), (3, 7, 9)),
    ("AdaptiveMaxPool3d", dict(output_size=(2, 3, 2), return_indices=True), (2, 2, 5, 7, 3)),
]


def test_max_pool_indices_with_tied_maxima():
    """Windows full of ties (mostly 0, 1 and 2): torch's first maximum in scan order, its
    index in torch's (C, *spatial) meaning, and the gradient to it."""
    check_twins([twin(name, (), kwargs, np.maximum(np.round(normal(*shape)), 0.0))
                 for name, kwargs, shape in TIED_POOLS])


def test_max_pool_indices_of_infinite_and_nan_values():
    x = normal(1, 2, 6, 6)
    x[0, 0, :3, :3] = -np.inf  # a window of -inf: the first real element, not the padding
    x[0, 1, 1, 1] = x[0, 1, 4, 4] = np.nan
    for t, f in [(torch.nn.MaxPool2d(3, 2, padding=1, return_indices=True),
                  nn.MaxPool2d(3, 2, padding=1, return_indices=True)),
                 (torch.nn.AdaptiveMaxPool2d(2, return_indices=True),
                  nn.AdaptiveMaxPool2d(2, return_indices=True))]:
        ref = [to_flax(r.numpy(), 1) for r in t(torch.from_numpy(x))]
        ours = f(jnp.asarray(to_flax(x, 1)))
        for what, a, b in zip(("values", "indices"), ours, ref):
            assert_close(a, b, what)


POOLS = [  # (name, args, kwargs, shape)
    ("AvgPool1d", (3,), dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False),
     (2, 3, 10)),
    ("AvgPool1d", (4,), dict(stride=3, padding=2), (3, 11)),
    ("AvgPool3d", ((2, 3, 2),), dict(stride=2, padding=1, ceil_mode=True), (2, 2, 5, 6, 5)),
    ("AvgPool3d", (3,), dict(stride=2, padding=1, count_include_pad=False,
                             divisor_override=5), (2, 2, 5, 6, 5)),
    ("LPPool1d", (2.0, 3), dict(stride=2, ceil_mode=True), (2, 3, 10)),
    ("LPPool2d", (3.0, (2, 3)), dict(stride=(1, 2), ceil_mode=True), (2, 3, 7, 8)),
    ("LPPool2d", (float("inf"), 2), {}, (2, 3, 6, 6)),
    ("LPPool3d", (1.0, 2), {}, (2, 2, 4, 4, 5)),
    ("AdaptiveAvgPool1d", (4,), {}, (2, 3, 10)),
    ("AdaptiveAvgPool3d", ((3, None, 2),), {}, (2, 2, 7, 3, 5)),
]


def test_pool_options():
    twins = []
    for name, args, kwargs, shape in POOLS:
        x = normal(*shape)
        if name.startswith("LPPool") and args[0] not in (1.0, float("inf")):
            x = np.abs(x)  # a non-integer power of a negative number is NaN on both sides
        twins.append(twin(name, args, kwargs, x))
    check_twins(twins)


def test_lp_pool_of_a_zero_window_has_a_zero_gradient():
    x = normal(1, 2, 6)
    x[0, 0, :2] = 0.0
    train_check("LPPool1d", (2.0, 2), {}, x)


# ----------------------------------------------------------------------------- padding


def test_padding_2d():
    check_twins([twin(name, (padding, 2.5) if name == "ConstantPad2d" else (padding,), {},
                      normal(2, 3, 4, 5))
                 for name in ("ZeroPad2d", "ConstantPad2d", "ReflectionPad2d",
                              "ReplicationPad2d", "CircularPad2d")
                 for padding in ((2, 1, 0, 3), (-1, 2, 1, -2), 1, (3, 0, 2, 2))])


PADS = [  # (name, padding, shape)
    ("ReflectionPad1d", (3, 1), (2, 3, 4)), ("ReplicationPad1d", (-2, 5), (3, 4)),
    ("CircularPad1d", (4, -1), (2, 3, 5)), ("ConstantPad1d", (-1, -1), (2, 3, 4)),
    ("ReflectionPad3d", (1, 2, 0, 1, 2, 1), (2, 2, 3, 4, 5)),
    ("ReplicationPad3d", (2, 0, 1, 3, 0, 2), (2, 3, 3, 4)),
    ("CircularPad3d", (1, 2, 3, 0, 1, 1), (1, 2, 3, 4, 5)),
    ("ZeroPad3d", (1, -1, 2, 0, 0, 1), (2, 2, 3, 4, 5)),
]


def test_padding_1d_3d():
    check_twins([twin(name, (padding, -1.0) if name.startswith("Constant") else (padding,), {},
                      normal(*shape)) for name, padding, shape in PADS])


@pytest.mark.parametrize("name,padding", [("ReflectionPad1d", 4), ("CircularPad1d", 5),
                                          ("ReflectionPad2d", (0, 0, 3, 0))])
def test_padding_beyond_torchs_limits_is_refused(name, padding):
    x = normal(2, 3, 4) if name.endswith("1d") else normal(1, 2, 3, 4)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(padding)(torch.from_numpy(x))
    with pytest.raises(ValueError, match=f"{name}: padding .* must be"):
        getattr(nn, name)(padding)(jnp.asarray(to_flax(x, 1)))


def test_replication_of_an_empty_axis_is_refused():
    with pytest.raises(ValueError, match="non-empty axes"):
        nn.ReplicationPad1d(1)(jnp.ones((2, 0, 3)))


# ----------------------------------------------------------------------------- normalisation


def _steps(name, args, kwargs, shapes, axis):
    """Train-mode calls on fresh inputs (outputs and running statistics each time), then an
    eval-mode call."""
    torch_m, flax_m = build(name, args, kwargs)
    flax_m.train()
    for step, shape in enumerate(shapes):
        x = normal(*shape) * (step + 1) + step
        for mode in ("train", "eval") if step == len(shapes) - 1 else ("train",):
            torch_m.train(mode == "train")
            flax_m.train() if mode == "train" else flax_m.eval()
            ref = torch_m(torch.from_numpy(x)).detach().numpy()
            assert_close(flax_m(jnp.asarray(to_flax(x, axis))), to_flax(ref, axis),
                         f"output {mode} step {step}")
            ours = flax_arch.torch_state_dict(flax_m)
            for key, value in torch_m.state_dict().items():
                assert_close(ours[key], value.numpy(), f"state {key} step {step}")


@pytest.mark.parametrize("name,args,kwargs,shapes,axis", [
    ("BatchNorm2d", (3,), dict(bias=False, momentum=None), [(4, 3, 2, 2)] * 3, 1),
    ("BatchNorm1d", (3,), dict(momentum=0.3), [(4, 3, 5), (0, 3, 5), (2, 3, 5)], 1),
    ("InstanceNorm1d", (3,), dict(track_running_stats=True, affine=True), [(4, 3, 6)] * 3, 1),
    ("InstanceNorm2d", (3,), dict(track_running_stats=True, momentum=None), [(2, 3, 4, 4)] * 2, 1),
    ("InstanceNorm1d", (3,), dict(track_running_stats=True), [(3, 6)] * 2, 0),
    ("InstanceNorm3d", (2,), dict(track_running_stats=True, momentum=0.5), [(2, 2, 3, 3, 2)] * 2, 1),
], ids=str)
def test_running_statistics_over_steps(name, args, kwargs, shapes, axis):
    """An empty batch counts a step and leaves the statistics as they are (as torch's)."""
    _steps(name, args, kwargs, shapes, axis)


def test_instance_norm_keeps_its_statistics_on_an_empty_batch():
    """The one deliberate difference: torch's statistics become NaN (the mean over no
    instances); ours stay as they were, as BatchNorm's (and torch's BatchNorm's) do."""
    t = torch.nn.InstanceNorm1d(3, track_running_stats=True)
    t(torch.zeros(0, 3, 4))
    assert torch.isnan(t.running_mean).all()
    f = nn.InstanceNorm1d(3, track_running_stats=True)
    assert f(jnp.zeros((0, 4, 3))).shape == (0, 4, 3)
    np.testing.assert_array_equal(f.running_mean[...], 0.0)
    np.testing.assert_array_equal(f.running_var[...], 1.0)


NORMS = [  # (name, args, kwargs, shape)
    ("GroupNorm", (2, 6), dict(eps=1e-3), (3, 6, 5, 4)),
    ("GroupNorm", (3, 3), dict(affine=False), (2, 3, 7)),
    ("GroupNorm", (2, 4), {}, (0, 4, 3)),
    ("LayerNorm", (5,), dict(bias=False), (2, 3, 5)),
    ("LayerNorm", ((3, 5),), dict(elementwise_affine=False), (2, 3, 5)),
    ("RMSNorm", ((3, 5),), dict(eps=1e-3), (2, 3, 5)),
    ("RMSNorm", (5,), {}, (4, 5)),
    ("LocalResponseNorm", (2,), dict(alpha=0.1, beta=0.6, k=2.0), (2, 5, 6)),
    ("LocalResponseNorm", (4,), {}, (2, 3, 4, 5)),
    ("LocalResponseNorm", (7,), dict(alpha=1.0), (2, 3, 4)),
]


def test_norm_options():
    check_twins([twin(name, args, kwargs, normal(*shape) * 3 + 1)
                 for name, args, kwargs, shape in NORMS])


def test_rms_norm_default_eps_is_the_computation_dtypes():
    x = (normal(4, 5) * 1e-4).astype(np.float32)  # mean(x^2) ~ eps: eps visibly matters
    ref = torch.nn.RMSNorm(5)(torch.from_numpy(x)).detach().numpy()
    ours = nn.RMSNorm(5)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-6, atol=0)  # float32
    assert np.max(np.abs(np.asarray(ours) - x / np.sqrt(np.mean(x**2, -1, keepdims=True)))) > 1e-4


def test_norm_refusals_name_the_layer():
    with pytest.raises(ValueError, match="num_channels=6 must be divisible by num_groups=4"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"LayerNorm with normalized_shape=\[4\] expects .* "
                                         r"\(\*, 4\); got \(2, 5\)"):
        nn.LayerNorm(4)(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="InstanceNorm1d in train mode needs more than 1 spatial"):
        nn.InstanceNorm1d(3)(jnp.ones((2, 1, 3)))
    with pytest.raises(ValueError, match=r"BatchNorm3d expects a channels-last input of shape "
                                         r"\(batch, depth, height, width, channels\)"):
        nn.BatchNorm3d(3)(jnp.ones((2, 4, 4, 3)))


# ----------------------------------------------------------------------------- resampling


UPSAMPLES = [  # (kwargs, shape)
    (dict(scale_factor=2), (2, 3, 5)),
    (dict(size=7), (2, 3, 5)),
    (dict(scale_factor=1.7), (2, 3, 4, 5)),
    (dict(size=(3, 8)), (2, 3, 5, 5)),
    (dict(scale_factor=(0.6, 2.4), mode="nearest-exact"), (1, 2, 7, 5)),
    (dict(scale_factor=1.5, mode="linear"), (2, 3, 5)),
    (dict(size=9, mode="linear", align_corners=True), (2, 3, 5)),
    (dict(scale_factor=2, mode="bilinear"), (2, 3, 4, 5)),
    (dict(size=(7, 3), mode="bilinear", align_corners=True), (2, 3, 4, 5)),
    (dict(scale_factor=1.3, mode="bilinear", recompute_scale_factor=True), (2, 2, 6, 5)),
    (dict(scale_factor=0.7, mode="bicubic"), (2, 2, 7, 6)),
    (dict(size=(9, 4), mode="bicubic", align_corners=True), (2, 2, 5, 6)),
    (dict(scale_factor=(2, 1.5, 0.5), mode="trilinear"), (1, 2, 3, 4, 6)),
    (dict(size=(2, 5, 3), mode="nearest"), (1, 2, 3, 4, 6)),
    (dict(size=(3, 4), mode="area"), (2, 3, 7, 9)),
]


def test_upsample():
    check_twins([twin("Upsample", (), kwargs, normal(*shape), channel=batched)
                 for kwargs, shape in UPSAMPLES])


# torch's rounding boundaries: an unchanged size from floor(n * f) (copied by the interpolating
# modes, and by 2-D 'nearest' in torch's vectorised kernel, taken where the output's height +
# width <= 128; resampled elsewhere), a doubled size from 2.05 (halved only there), float64
# positions rounded to float32 (26 -> 22, 14 -> 23), in both dtypes. The nearest modes'
# gradients against the exact mathematics: here torch's own nearest backward takes its
# vectorised kernel's indices in every rank, which are not its forward's.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kwargs,shape", [
    (dict(scale_factor=1.05), (1, 2, 5)),
    (dict(scale_factor=2.05, mode="nearest-exact"), (1, 2, 5)),
    (dict(size=22), (1, 2, 26)),
    (dict(size=23, mode="nearest-exact"), (1, 2, 14)),
    (dict(scale_factor=1.05, mode="linear"), (1, 2, 6)),
    (dict(scale_factor=(1.05, 2.05)), (1, 2, 5, 6)),
    (dict(scale_factor=(1.05, 2.3)), (1, 2, 2, 61)),
    (dict(scale_factor=(1.05, 0.7), mode="bilinear"), (1, 2, 5, 6)),
    (dict(scale_factor=(1.05, 1.3), mode="bicubic"), (1, 2, 5, 6)),
    (dict(scale_factor=(2.05, 1.05, 1.3)), (1, 2, 3, 5, 4)),
    (dict(scale_factor=(1.05, 2.05, 0.7), mode="nearest-exact"), (1, 2, 5, 3, 4)),
    (dict(scale_factor=(1.05, 2.05, 0.7), mode="trilinear"), (1, 2, 5, 3, 4)),
    (dict(size=(22, 3, 23), mode="trilinear", align_corners=True), (1, 1, 26, 3, 14)),
], ids=str)
def test_upsample_at_torchs_rounding_boundaries(kwargs, shape, dtype):
    x = normal(*shape).astype(dtype)
    ref = torch.nn.Upsample(**kwargs)(torch.from_numpy(x)).numpy()
    up = nn.Upsample(**kwargs)
    nearest = kwargs.get("mode", "nearest").startswith("nearest")
    cot = normal(*ref.shape).astype(dtype)

    @jax.jit  # the forward and (nearest modes) its gradient, compiled together
    def call(a, g):
        out, vjp = jax.vjp(up, a)
        return out, (vjp(g)[0] if nearest else None)

    ours, grad = call(np.moveaxis(x, 1, -1), np.moveaxis(cot, 1, -1))
    ours = np.moveaxis(np.asarray(ours), -1, 1)
    tol = 1e-10 if dtype == np.float64 else 1e-6  # an index off by one is an O(1) error
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol * max(1.0, np.abs(ref).max()))
    if nearest:
        # the gradient against the exact mathematics, not torch's backward: each output's
        # cotangent goes to the input it copies, found by upsampling the inputs' indices
        # (in the same dtype: its positions round differently)
        size = math.prod(shape[2:])
        index = torch.from_numpy(np.arange(size, dtype=dtype).reshape(1, 1, *shape[2:]))
        src = torch.nn.Upsample(**kwargs)(index).numpy().astype(int).ravel()
        exact = np.stack([[np.bincount(src, c.ravel(), size) for c in n] for n in cot])
        np.testing.assert_allclose(np.moveaxis(np.asarray(grad), -1, 1).reshape(exact.shape),
                                   exact, rtol=0, atol=tol * max(1.0, np.abs(exact).max()))


def test_upsampling_2d_forms():
    check_twins([twin("UpsamplingNearest2d", (), dict(scale_factor=3), normal(2, 3, 4, 5)),
                 twin("UpsamplingBilinear2d", (), dict(size=(7, 9)), normal(2, 3, 4, 5))])


def test_upsample_refusals():
    with pytest.raises(ValueError, match="align_corners can only be set with the interpolating"):
        nn.Upsample(scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        nn.Upsample()
    with pytest.raises(ValueError, match=r"'bilinear' expects a channels-last input of shape "
                                         r"\(batch, height, width, channels\)"):
        nn.Upsample(scale_factor=2, mode="bilinear")(jnp.ones((2, 5, 3)))


def test_pixel_shuffle_and_unshuffle():
    channel = lambda name, ndim: ndim - 3  # noqa: E731 - torch's (*, C, H, W)
    twins = []
    for shape in ((2, 18, 3, 4), (2, 2, 8, 3, 2), (8, 3, 5)):
        twins.append(twin("PixelShuffle", (2 if shape[-3] % 9 else 3,), {}, normal(*shape),
                          channel=channel))
        up = list(shape)
        up[-2:] = [up[-2] * 2, up[-1] * 2]
        twins.append(twin("PixelUnshuffle", (2,), {}, normal(*up), channel=channel))
    check_twins(twins)


# ----------------------------------------------------------------------------- flatten


def test_flatten_in_torchs_dims():
    check_twins([twin("Flatten", args, {}, normal(*shape)) for args, shape in [
        ((), (2, 3, 4, 5)), ((2,), (2, 3, 4, 5)), ((1, 2), (2, 3, 4, 5)), ((0, -2), (2, 3, 4, 5)),
        ((), (2, 3, 4)), ((0,), (2, 5)), ((0, 0), (7,))]])


def test_unflatten_in_torchs_dims():
    check_twins([twin("Unflatten", args, {}, normal(*shape)) for args, shape in [
        ((1, (3, 4, 5)), (2, 60)), ((1, (3, -1)), (2, 12, 5)), ((2, (2, 2)), (2, 3, 4)),
        ((-1, (1, 2)), (2, 3, 2)), ((0, (2, 3)), (6,))]])


def test_conv_flatten_linear_keeps_torchs_weights():
    """A classifier head: torch's state_dict loads as is, the outputs and gradients agree."""
    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 3 * 2, 5)).double()
    f = nn.Sequential(nn.Conv2d(3, 4, 3, rngs=nnx.Rngs(0)), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 3 * 2, 5, rngs=nnx.Rngs(0)))
    flax_arch.load_torch_state_dict(f, t.state_dict())
    x = normal(2, 3, 5, 4)
    assert_close(f(jnp.asarray(to_flax(x, 1))), t(torch.from_numpy(x)).detach().numpy(), "output")
    with pytest.raises(ValueError, match=r"does not split torch's dimension 1 of size 60"):
        nn.Unflatten(1, (7, -1))(jnp.ones((2, 60)))


# ----------------------------------------------------------------------------- empty batches


EMPTY = [  # (name, args, shape)
    ("Linear", (4, 3), (0, 4)), ("Conv1d", (3, 2, 3), (0, 3, 5)),
    ("Conv2d", (3, 4, 3), (0, 3, 5, 5)), ("ConvTranspose2d", (3, 2, 3), (0, 3, 4, 4)),
    ("MaxPool2d", (2,), (0, 3, 4, 4)), ("AvgPool2d", (2,), (0, 3, 4, 4)),
    ("AdaptiveAvgPool2d", (2,), (0, 3, 5, 5)), ("AdaptiveMaxPool1d", (2,), (0, 3, 5)),
    ("BatchNorm2d", (3,), (0, 3, 2, 2)), ("InstanceNorm1d", (3,), (0, 3, 4)),
    ("GroupNorm", (1, 3), (0, 3, 4)), ("LayerNorm", (4,), (0, 3, 4)),
    ("ReflectionPad1d", (2,), (0, 3, 4)), ("Upsample", (None, 2), (0, 3, 4)),
]


def test_an_empty_batch_as_torch():
    check_twins([twin(name, args, {}, normal(*shape)) for name, args, shape in EMPTY])


def test_recurrent_empty_batch_as_torch():
    check_twins([twin(name, (3, 4), {}, normal(5, 0, 3)) for name in ("RNN", "LSTM", "GRU")])


# ----------------------------------------------------------------------------- dropout


def test_dropout_is_the_identity_in_eval_mode_and_at_p_0():
    """And zeros, with a zero gradient, at p=1 in train mode."""
    check_twins([twin(name, (p,), {}, normal(*shape), mode)
                 for name, shape in [("Dropout1d", (2, 3, 5)), ("Dropout1d", (3, 5)),
                                     ("Dropout2d", (2, 3, 4, 5)), ("Dropout2d", (2, 3, 5)),
                                     ("Dropout3d", (2, 3, 2, 4, 5)), ("Dropout3d", (3, 2, 4, 5)),
                                     ("AlphaDropout", (4, 5))]
                 for mode, p in (("eval", 0.5), ("train", 0.0), ("train", 1.0))])


@pytest.mark.parametrize("name,shape", [("Dropout1d", (400, 5, 50)), ("Dropout2d", (400, 5, 6, 50)),
                                        ("Dropout2d", (400, 5, 50)), ("Dropout3d", (50, 3, 3, 2, 50))],
                         ids=str)
def test_channel_dropout_masks_whole_channels_as_torch(name, shape):
    """Each channel of each sample is kept whole or zeroed whole (channels-last: the mask is
    constant over the spatial axes), kept ones scaled by 1/(1-p), a fraction p dropped."""
    p = 0.3
    x = np.ones(shape, np.float32)
    ours = np.asarray(getattr(nn, name)(p)(jnp.asarray(x), rngs=nnx.Rngs(dropout=0)))
    ref = to_flax(getattr(torch.nn, name)(p)(torch.from_numpy(np.moveaxis(x, -1, 1))).numpy(), 1)
    for y in (ours, ref):
        spatial = tuple(range(1, y.ndim - 1))
        assert np.all(y.min(axis=spatial) == y.max(axis=spatial))  # whole channels
        assert set(np.unique(y)) <= {0.0, np.float32(1 / (1 - p))}
        # >= 15,000 Bernoulli(0.3) channels: the fraction's standard deviation is <= 0.004
        assert abs((y.max(axis=spatial) == 0).mean() - p) < 0.02


def test_alpha_dropout_keeps_the_mean_and_variance_as_torch():
    p, x = 0.2, normal(400, 500).astype(np.float32)
    ours = np.asarray(nn.AlphaDropout(p)(jnp.asarray(x), rngs=nnx.Rngs(dropout=0)))
    ref = torch.nn.AlphaDropout(p)(torch.from_numpy(x)).numpy()
    alpha = 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717
    a = ((1 - p) * (1 + p * alpha**2)) ** -0.5
    for y in (ours, ref):
        dropped = np.isclose(y, a * alpha * (p - 1), rtol=1e-6)
        assert abs(dropped.mean() - p) < 0.01  # 200,000 draws: sd 0.0009
        np.testing.assert_allclose(y[~dropped], a * x[~dropped] + a * alpha * p, rtol=1e-5)
        assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01


# ----------------------------------------------------------------------------- constructors

CLASSES = {name: cls for name, cls in {**TWINS, **RECURRENT}.items() if inspect.isclass(cls)}

# torch arguments that a twin does not take, and why (the port refuses a layer that sets one)
NOT_TAKEN = {
    "Embedding": {"scale_grad_by_freq": "a gradient rescaled by each row's count: not built",
                  "sparse": "a storage format of torch's gradient, not a different value"},
}


def _takes_any_keyword(cls) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


@pytest.mark.parametrize("name", sorted(n for n, c in CLASSES.items() if not _takes_any_keyword(c)))
def test_an_unexpected_argument_names_the_public_class(name):
    with pytest.raises(TypeError, match=rf"\b{name}\b") as info:
        CLASSES[name](not_an_argument=1)
    assert "_" not in str(info.value).split("(")[0].split(".")[0], str(info.value)


@pytest.mark.parametrize("name", sorted(n for n in CLASSES if hasattr(torch.nn, n)))
def test_constructor_arguments_are_torchs(name):
    """Every torch argument (name, default) is the twin's too, in torch's order, except
    device and dtype (the twin's dtype is the computation dtype, keyword-only)."""
    ours = inspect.signature(CLASSES[name].__init__).parameters
    theirs = inspect.signature(getattr(torch.nn, name).__init__).parameters
    if name in ("LSTM", "RNN", "GRU", "Identity") or any(
            p.kind is p.VAR_POSITIONAL for p in theirs.values()):
        return  # torch's own signature is (*args, **kwargs)
    skip = {"self", "device", "dtype", *NOT_TAKEN.get(name, ())}
    torch_args = [(n, p.default) for n, p in theirs.items()
                  if n not in skip and not n.startswith("_")]
    our_args = [(n, ours[n].default) for n, _ in torch_args if n in ours]
    assert our_args == torch_args, name
    positional = [n for n, p in theirs.items() if p.kind is p.POSITIONAL_OR_KEYWORD
                  and n not in skip and not n.startswith("_")]
    assert [n for n in ours if n in positional] == positional, name


def test_lstm_proj_size_refusals_as_torch():
    for proj, match in ((3, "proj_size=3 has to be smaller than hidden_size=3"),
                        (-1, "proj_size should be a positive integer or zero")):
        with pytest.raises(ValueError):
            torch.nn.LSTM(2, 3, proj_size=proj)
        with pytest.raises(ValueError, match=match):
            recurrent.LSTM(2, 3, proj_size=proj, rngs=nnx.Rngs(0))
