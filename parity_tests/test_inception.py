"""GoogLeNet against its torch twin and torchvision's: outputs, gradients, BatchNorm
statistics, auxiliary heads, transform_input, shapes, initialisation, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

import flax_arch
import torch_ref.inception
from flax_arch.models.inception import GoogLeNet, Inception
from flax_arch.nn import MaxPool2d
from parity_tests.harness import Pair, assert_close, uninitialised
from parity_tests.tolerances import registry_checks, tolerance

DTYPES = [np.float64, np.float32]
SMALL = (2, 3, 64, 64)  # the registry's test input: 2 x 2 x 1024 before the average pool


# The registry's generic checks of 'inception' (the block, BatchNorm in train mode included)
# run in test_registry_parity.py; those of 'googlenet' run here, on a superset of its
# configuration (test_googlenet_generic_checks).

# ----------------------------------------------------------------------------- GoogLeNet
#
# GoogLeNet's gradients are compared in float64 only. Through 57 BatchNorm-ReLU layers and 13
# max-pools its gradient is ill-conditioned at float32 rounding (ReLU and max-pool switches),
# so two correct float32 implementations differ by more than any tolerance of tolerances.py.
# Measured with torch alone on the registry's configuration: torch's float32 parameter
# gradients are up to 7e-2 (of the largest) from its float64 ones in train mode, and 2.6e-3
# in eval mode with calibrated statistics; in float64, a 1e-7 relative change of the input
# moves train-mode gradients by 1.7e-2. float32 compares outputs and running statistics,
# which are well-conditioned (1e-5). Every check here is compiled (the parity tool); the
# -m slow comparisons with torchvision at other sizes run GoogLeNet op by op.


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """Sets every BatchNorm's running statistics to those of one random batch, as a trained
    network has them, and leaves the model in train mode. With fresh statistics (mean 0,
    variance 1), eval mode lets the activations shrink with the 0.01-std weights: 1e-4 after
    inception3a, 4e-12 after inception5b, so eval-mode outputs would be fc.bias alone."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(1).standard_normal(SMALL)).float())
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    return model


def googlenet_pair(dtype, train: bool, aux_logits: bool) -> Pair:
    """torch_ref's GoogLeNet (calibrated) and ours at the registry's test configuration."""
    kwargs = {**flax_arch.get_entry("googlenet").test.kwargs, "aux_logits": aux_logits}
    torch.manual_seed(0)
    ref = calibrated(torch_ref.inception.GoogLeNet(**kwargs))
    ours = uninitialised(lambda: GoogLeNet(**kwargs, rngs=nnx.Rngs(0), param_dtype=dtype),
                         cache_key=("googlenet", aux_logits, np.dtype(dtype).name))
    x = np.random.default_rng(0).standard_normal(SMALL)
    return Pair.of_modules(ref, ours, [x], ["NCHW"], ["NC"] * (3 if aux_logits else 1), dtype,
                           family="inception", train=train)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_googlenet_generic_checks(dtype, train):
    """The registry's generic checks of 'googlenet' (test_registry_parity.py leaves them to
    this file) on a superset of its configuration: the auxiliary heads on, and BatchNorm
    statistics calibrated, without which eval mode's activations shrink to 4e-12 of fc.bias.
    (logits, aux2, aux1) in both modes: outputs and running statistics, and in float64 every
    gradient and the mode's optimizer step, as the registry's checks() chooses them."""
    want = registry_checks("googlenet", dtype, train)
    report = googlenet_pair(dtype, train, aux_logits=True).check(want)
    assert set(report.largest()) == set(want)
    assert [c.name for c in report.comparisons if c.kind == "output"] == ["[0]", "[1]", "[2]"]


def traced(build, x_shape, train: bool = False):
    """The output shapes of ``build()``'s model on an input of ``x_shape``, traced without
    initialising or running anything."""
    model = nnx.eval_shape(build)
    if not train:
        model.eval()
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                         jax.ShapeDtypeStruct(x_shape, jnp.float32))
    return [o.shape for o in out] if isinstance(out, tuple) else out.shape


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_return_type_does_not_depend_on_the_mode(train):
    def build(aux_logits):
        return lambda: GoogLeNet(num_classes=10, aux_logits=aux_logits, rngs=nnx.Rngs(0))

    assert traced(build(False), (2, 64, 64, 3), train) == (2, 10)
    assert traced(build(True), (2, 64, 64, 3), train) == [(2, 10)] * 3


# ----------------------------------------------------------------------------- torchvision


def load_torchvision(tv: torch.nn.Module, dtype, **kwargs) -> GoogLeNet:
    """Our twin of ``tv``, with its weights loaded strictly, in the same mode."""
    ours = uninitialised(lambda: GoogLeNet(**kwargs, rngs=nnx.Rngs(1), param_dtype=dtype))
    flax_arch.load_torch_state_dict(ours, tv.state_dict())
    if not tv.training:
        ours.eval()
    return ours


def compare(ours_out, tv_out, dtype, what):
    ours_out = ours_out if isinstance(ours_out, tuple) else (ours_out,)
    tv_out = tuple(tv_out) if isinstance(tv_out, tuple) else (tv_out,)
    assert len(ours_out) == len(tv_out), what
    for i, (a, b) in enumerate(zip(ours_out, tv_out)):
        assert_close(a, b.detach().numpy(), tolerance(dtype, "inception"), f"output {i} {what}",
                     ("inception", np.dtype(dtype).name))


def torchvision_googlenet(dtype, **kwargs) -> torch.nn.Module:
    """Randomly initialised, BatchNorm statistics calibrated, in train mode."""
    torch.manual_seed(0)
    tv = calibrated(torchvision.models.googlenet(weights=None, init_weights=True, **kwargs))
    return tv.to({np.float64: torch.float64, np.float32: torch.float32}[dtype])


def image(shape, dtype) -> tuple[torch.Tensor, jax.Array]:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return torch.from_numpy(x), jnp.asarray(np.moveaxis(x, 1, -1))


@pytest.mark.parametrize("dtype", [pytest.param(np.float64, marks=pytest.mark.slow),
                                   np.float32], ids=lambda d: np.dtype(d).name)
def test_torchvision_googlenet_loads_and_matches(dtype):
    """torchvision's GoogLeNet with ``transform_input`` (its pretrained weights' setting),
    loaded strictly into ours: eval-mode logits, compiled."""
    tv = torchvision_googlenet(dtype, aux_logits=False, transform_input=True).eval()
    ours = uninitialised(lambda: GoogLeNet(transform_input=True, rngs=nnx.Rngs(0),
                                           param_dtype=dtype))
    x = np.random.default_rng(0).standard_normal(SMALL)
    Pair.of_modules(tv, ours, [x], ["NCHW"], ["NC"], dtype, family="inception",
                    train=False).check_forward()


@pytest.mark.slow
def test_torchvision_googlenet_with_aux_logits():
    """torchvision's train-mode tuple (BatchNorm on batch statistics, running statistics
    updated) and eval-mode logits; our eval mode returns the auxiliary logits as well."""
    dtype = np.float64
    tv = torchvision_googlenet(dtype, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    ours = load_torchvision(tv, dtype, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    x_t, x_f = image(SMALL, dtype)
    with torch.no_grad():
        compare(ours(x_f), tv(x_t), dtype, "train")
    state = flax_arch.torch_state_dict(ours)
    for key, value in tv.state_dict().items():
        assert_close(state[key], value.numpy(), tolerance(dtype), f"state {key}")
    tv.eval()
    ours.eval()
    with torch.no_grad():
        logits, _, _ = ours(x_f)
        compare(logits, tv(x_t), dtype, "eval")


def test_ceil_mode_pool_keeps_a_window_overhanging_a_small_input():
    """What lets GoogLeNet run at torchvision's minimum size 15: maxpool3 sees 2 x 2."""
    x = np.random.default_rng(0).standard_normal((1, 4, 2, 2))
    ref = torch.nn.MaxPool2d(3, stride=2, ceil_mode=True)(torch.from_numpy(x)).numpy()
    ours = MaxPool2d(3, stride=2, ceil_mode=True)(jnp.asarray(np.moveaxis(x, 1, -1)))
    np.testing.assert_array_equal(ours, np.moveaxis(ref, 1, -1))


@pytest.mark.slow
def test_torchvision_googlenet_minimum_size():
    dtype = np.float64
    tv = torchvision_googlenet(dtype, aux_logits=False).eval()
    ours = load_torchvision(tv, dtype)
    x_t, x_f = image((1, 3, 15, 15), dtype)
    with torch.no_grad():
        compare(ours(x_f), tv(x_t), dtype, "15 x 15")


@pytest.mark.slow
@pytest.mark.parametrize("aux_logits", [False, True])
def test_torchvision_googlenet_full_size(aux_logits):
    dtype = np.float32
    tv = torchvision_googlenet(dtype, aux_logits=aux_logits).eval()
    ours = load_torchvision(tv, dtype, aux_logits=aux_logits)
    x_t, x_f = image((1, 3, 224, 224), dtype)
    with torch.no_grad():
        out = ours(x_f)
        compare(out[0] if aux_logits else out, tv(x_t), dtype, "224 x 224")


# ----------------------------------------------------------------------------- shapes, init


def test_googlenet_shapes_at_224():
    """Every stage's shape in torchvision's comments, channels-last, traced at 224 x 224."""
    stages = [
        ("conv1", (112, 112, 64)), ("maxpool1", (56, 56, 64)), ("conv2", (56, 56, 64)),
        ("conv3", (56, 56, 192)), ("maxpool2", (28, 28, 192)),
        ("inception3a", (28, 28, 256)), ("inception3b", (28, 28, 480)),
        ("maxpool3", (14, 14, 480)), ("inception4a", (14, 14, 512)),
        ("inception4b", (14, 14, 512)), ("inception4c", (14, 14, 512)),
        ("inception4d", (14, 14, 528)), ("inception4e", (14, 14, 832)),
        ("maxpool4", (7, 7, 832)), ("inception5a", (7, 7, 832)),
        ("inception5b", (7, 7, 1024)), ("avgpool", (1, 1, 1024)),
    ]
    model = nnx.eval_shape(lambda: GoogLeNet(aux_logits=True, rngs=nnx.Rngs(0)))
    model.eval()
    graphdef, state = nnx.split(model)

    def run_stages(state, x):
        model = nnx.merge(graphdef, state)
        outs = []
        for name, _ in stages:
            x = getattr(model, name)(x)
            outs.append(x)
        return outs

    outs = jax.eval_shape(run_stages, state, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert [o.shape for o in outs] == [(1, *shape) for _, shape in stages]
    assert traced(lambda: GoogLeNet(aux_logits=True, rngs=nnx.Rngs(0)),
                  (1, 224, 224, 3)) == [(1, 1000)] * 3


def test_googlenet_initialisation_is_torchvisions():
    """N(0, 0.01^2) convolution and linear weights (truncated at 200 std in torch), BatchNorm
    weights 1 and biases 0."""
    torch.manual_seed(0)
    ref = torch_ref.inception.GoogLeNet()
    ours = flax_arch.torch_state_dict(nnx.jit(lambda: GoogLeNet(rngs=nnx.Rngs(0)))())
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    weights = [k for k, m in ref.named_modules() if isinstance(m, layers)]
    assert len(weights) == 57 + 1
    w = np.concatenate([ours[f"{k}.weight"].ravel() for k in weights])
    w_ref = np.concatenate([ref.state_dict()[f"{k}.weight"].numpy().ravel() for k in weights])
    for values in (w, w_ref):
        assert abs(values.mean()) < 1e-4 and abs(values.std() - 0.01) < 1e-4
    for key, value in ref.state_dict().items():
        if ".bn." in key and not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs():
    # abstract models: the input is checked before any parameter is read
    model = nnx.eval_shape(lambda: GoogLeNet(num_classes=10, rngs=nnx.Rngs(0)))
    layout = r"\(batch, height, width, channels=3\)"
    with pytest.raises(ValueError, match=layout):
        model(jnp.zeros((1, 3, 64, 64)))  # torch's NCHW
    with pytest.raises(ValueError, match="height and width >= 15"):
        model(jnp.zeros((1, 14, 64, 3)))
    module = nnx.eval_shape(lambda: Inception(8, 4, 3, 5, 2, 3, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(batch, height, width, in_channels\)"):
        module(jnp.zeros((2, 8, 7, 6)))  # NCHW
    with pytest.raises(ValueError, match="positive"):
        Inception(8, 0, 3, 5, 2, 3, 4, rngs=nnx.Rngs(0))
