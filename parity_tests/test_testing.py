"""The public parity tool, ``flax_arch.testing.assert_parity``, on pairs a user writes: it
passes on twins and fails, naming what differs, on a forward bug, a gradient-only bug and a
running-statistics-only bug; bad input gets the interop's and the layout's errors."""

import doctest
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import flax_arch.testing
from flax_arch import nn
from flax_arch.testing import assert_parity

X = np.random.default_rng(0).standard_normal((4, 3, 10, 10))  # (batch, 3, height, width)


class TorchNet(torch.nn.Module):
    """Conv2d + BatchNorm2d + ReLU + global average + Linear, (N, 3, H, W) -> (N, 5)."""

    def __init__(self, out_features: int = 5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, out_features)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def straight_through_relu(x):
    """ReLU's values with the identity's gradient: a bug only gradients can see."""
    return x + jax.lax.stop_gradient(jax.nn.relu(x) - x)


class FlaxNet(nnx.Module):
    """TorchNet's twin, (N, H, W, 3) -> (N, 5); ``relu`` and ``momentum`` plant bugs."""

    def __init__(self, out_features: int = 5, *, relu=jax.nn.relu, momentum: float = 0.1,
                 rngs: nnx.Rngs):
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=rngs)
        self.bn = nn.BatchNorm2d(8, momentum=momentum)
        self.fc = nn.Linear(8, out_features, rngs=rngs)
        self.relu = relu

    def __call__(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean(axis=(1, 2)))


def pair(**flax_kwargs):
    torch.manual_seed(0)
    return FlaxNet(**flax_kwargs, rngs=nnx.Rngs(0)), TorchNet()


# ----------------------------------------------------------------------------- equal pairs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_passes_on_twins_and_reports_the_largest_error_per_check(train, dtype):
    report = assert_parity(*pair(), X, train=train, dtype=dtype)
    assert list(report.largest()) == ["forward", "grad", "sgd", "adam"]
    bound = 1e-10 if dtype == "float64" else 1e-4
    assert report.rtol == bound and not report.rtol_given
    assert all(c.error <= bound for c in report.comparisons)
    # every parameter and buffer, the input's gradient, each step's loss
    whats = {c.what for c in report.comparisons}
    assert {"output", "state bn.running_var after the call", "grad conv.weight", "grad input 0",
            "loss step 2", "state fc.bias after step 2"} <= whats
    text = str(report)
    assert text.startswith(f"parity in {dtype}, {'train' if train else 'eval'} mode, tolerance")
    assert re.search(r"\n  grad +\d\.\d\de-\d\d  grad ", text), text


def test_compiler_options_compile_the_same_checks():
    """Other XLA options (here the elemental emitters) check the same: the same comparisons,
    errors at rounding level; options that are not a dict are refused."""
    fast = assert_parity(*pair(), X, train=True,
                         compiler_options={"xla_cpu_use_fusion_emitters": False})
    default = assert_parity(*pair(), X, train=True)
    assert [c.what for c in fast.comparisons] == [c.what for c in default.comparisons]
    assert all(c.error <= 1e-10 for c in fast.comparisons)
    with pytest.raises(ValueError, match="compiler_options must be None or a dict"):
        assert_parity(*pair(), X, compiler_options=[("xla_backend_optimization_level", 0)])


def test_the_module_docstring_example_runs():
    """The README's example: the module docstring of flax_arch.testing."""
    result = doctest.testmod(flax_arch.testing, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5 and result.failed == 0


def test_models_end_as_training_leaves_them():
    """Weights loaded and cast, the mode set, BatchNorm statistics and parameters moved by
    the call and the optimizer steps, identically on both sides."""
    flax_model, torch_model = pair()
    start = torch_model.fc.weight.detach().double().clone()
    assert_parity(flax_model, torch_model, X, train=True, checks=("forward", "sgd"))
    assert torch_model.training and not flax_model.bn.use_running_average
    assert torch_model.fc.weight.dtype == torch.float64
    assert flax_model.fc.weight[...].dtype == jnp.float64
    assert int(torch_model.bn.num_batches_tracked) == 3  # one call, then two steps
    assert not torch.equal(start, torch_model.fc.weight.detach())
    ours = flax_arch.torch_state_dict(flax_model)
    for key, value in torch_model.state_dict().items():
        np.testing.assert_allclose(ours[key], value.numpy(), rtol=0, atol=1e-12, err_msg=key)


class TorchSeq(torch.nn.Module):
    """A tree of outputs, one of them recurrent-shaped: x (L, N, 4) and indices (N,) ->
    {'pooled': ((N, 6), (N, 6)), 'seq': (L, N, 6)}."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(7, 4)
        self.fc = torch.nn.Linear(4, 6)

    def forward(self, x, idx):
        seq = self.fc(x + self.emb(idx))
        return {"seq": seq, "pooled": (seq.sum(0), seq.amax(0))}


class FlaxSeq(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.emb = nn.Embedding(7, 4, rngs=rngs)
        self.fc = nn.Linear(4, 6, rngs=rngs)

    def __call__(self, x, idx):
        seq = self.fc(x + self.emb(idx)[None])
        return {"seq": seq, "pooled": (seq.sum(0), seq.max(0))}


def seq_pair():
    torch.manual_seed(0)
    return FlaxSeq(rngs=nnx.Rngs(0)), TorchSeq()


def test_output_trees_integer_inputs_and_output_layouts():
    """Leaves in jax.tree.leaves order (dict keys sorted); an (L, N, C) output is "LNC" and
    stays as it is; the integer input is passed as it is and not differentiated."""
    rng = np.random.default_rng(1)
    x, idx = rng.standard_normal((5, 3, 4)), torch.tensor([0, 6, 2])
    report = assert_parity(*seq_pair(), x, idx, layouts=["LNC", "N"],
                           output_layouts=["NC", "NC", "LNC"])
    whats = {c.what for c in report.comparisons}
    assert {"output ['pooled'][0]", "output ['pooled'][1]", "output ['seq']", "grad input 0",
            "grad emb.weight"} <= whats
    assert "grad input 1" not in whats
    # by default a rank-3 output is channels-first, (N, C, L): named, with both shapes
    with pytest.raises(AssertionError, match=r"output \['seq'\] has shape \(5, 3, 6\) in Flax, "
                                             r"\(5, 6, 3\) from torch \(converted from its "
                                             r"layout 'NCL'\)"):
        assert_parity(*seq_pair(), x, idx, layouts=["LNC", "N"])


def test_registry_loss_and_own_loss():
    """``loss`` as a registry loss name with its target, or as a (flax, torch) pair."""
    target = np.random.default_rng(2).integers(0, 5, (4,))
    report = assert_parity(*pair(), X, train=True, loss="cross_entropy", target=target)
    assert {"loss step 1", "grad fc.weight"} <= {c.what for c in report.comparisons}
    own = (lambda out, t: jnp.sum(jnp.tanh(out) * t), lambda out, t: (out.tanh() * t).sum())
    weights = np.random.default_rng(3).standard_normal((4, 5))
    assert_parity(*pair(), X, train=True, loss=own, target=weights, target_layout="NC")
    with pytest.raises(AssertionError, match=r"check 'sgd' failed(.|\n)*loss step 1"):
        wrong = (own[0], lambda out, t: (out.tanh() * t).sum() * 1.001)
        assert_parity(*pair(), X, train=True, loss=wrong, target=weights, checks=("sgd",))


def test_rtol_overrides_and_the_report_says_so():
    report = assert_parity(*pair(), X, dtype="float32", rtol=1e-5, checks=("forward",))
    assert report.rtol == 1e-5 and report.rtol_given
    assert "tolerance 1e-05 (rtol given; the float32 default is 1e-04)" in str(report)


# ----------------------------------------------------------------------------- it fails


def test_a_forward_bug_fails_the_forward_check_naming_the_output():
    class Shifted(FlaxNet):
        def __call__(self, x):
            return super().__call__(x) + 1e-7  # every logit off by 1e-7

    torch.manual_seed(0)
    with pytest.raises(AssertionError) as e:
        assert_parity(Shifted(rngs=nnx.Rngs(0)), TorchNet(), X, train=True)
    msg = str(e.value)
    assert "check 'forward' failed (float64, train mode): 1 of " in msg
    assert re.search(r"\n  output: error 1\.\d+e-07", msg), msg
    assert "tolerance 1e-10" in msg


def test_a_gradient_only_bug_passes_forward_and_fails_grad_and_steps():
    report = assert_parity(*pair(relu=straight_through_relu), X, train=True,
                           checks=("forward",))
    assert report.largest()["forward"].error < 1e-14  # the same values
    with pytest.raises(AssertionError) as e:
        assert_parity(*pair(relu=straight_through_relu), X, train=True, checks=("grad",))
    msg = str(e.value)
    assert "check 'grad' failed" in msg
    for what in ("grad conv.weight", "grad bn.weight", "grad input 0"):
        assert f"\n  {what}: error" in msg, msg
    assert "grad fc.weight" not in msg  # after the ReLU: not affected
    with pytest.raises(AssertionError) as e:
        assert_parity(*pair(relu=straight_through_relu), X, train=True, checks=("sgd",))
    assert re.search(r"check 'sgd' failed(.|\n)*\n  state (conv|bn)\.\w+ after step 2",
                     str(e.value)), str(e.value)


def test_a_running_statistics_bug_fails_only_through_the_state():
    """BatchNorm updating its running averages with momentum 0.2 instead of 0.1: train-mode
    outputs and gradients use batch statistics and agree; the state after the call does not."""
    report = assert_parity(*pair(momentum=0.2), X, train=False)  # eval: statistics read only
    assert all(c.error < 1e-14 for c in report.comparisons)
    assert_parity(*pair(momentum=0.2), X, train=True, checks=("grad",))
    with pytest.raises(AssertionError) as e:
        assert_parity(*pair(momentum=0.2), X, train=True, checks=("forward",))
    msg = str(e.value)
    assert re.search(r"2 of \d+ arrays differ", msg), msg
    assert "\n  state bn.running_mean after the call: error" in msg
    assert "\n  state bn.running_var after the call: error" in msg


def test_many_differences_name_the_worst_few_first():
    with pytest.raises(AssertionError) as e:
        assert_parity(*pair(relu=lambda x: 1.01 * jax.nn.relu(x)), X, train=True,
                      checks=("sgd",))
    lines = str(e.value).splitlines()
    errors = [float(re.search(r"error (\S+)$", line).group(1)) for line in lines[1:6]]
    assert errors == sorted(errors, reverse=True)
    assert re.fullmatch(r"  \.\.\. and \d+ more", lines[6])


# ----------------------------------------------------------------------------- bad input


def test_mismatched_state_trees_give_the_interops_error():
    torch.manual_seed(0)
    with pytest.raises(flax_arch.StateDictError, match=r"shape mismatch for fc.weight: got "
                                                       r"\(7, 8\), expected \(5, 8\)"):
        assert_parity(FlaxNet(rngs=nnx.Rngs(0)), TorchNet(out_features=7), X)


def test_an_input_in_the_wrong_layout_gets_the_layout_error():
    channels_last = np.moveaxis(X, 1, -1)  # (4, 10, 10, 3) where NCHW is expected
    with pytest.raises(ValueError, match=r"Conv2d expects a channels-last input of shape "
                                         r"\(batch, height, width, in_channels\) with 3 "
                                         r"channels") as e:
        assert_parity(*pair(), channels_last)
    assert "torch's layouts ['NCHW']" in "\n".join(e.value.__notes__)
    with pytest.raises(ValueError, match=r"input 0: expected torch layout 'NCL' \(rank 3\), "
                                         r"got shape \(4, 3, 10, 10\)"):
        assert_parity(*pair(), X, layouts=["NCL"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="checks must be a non-empty subset"):
        assert_parity(*pair(), X, checks=("forwards",))
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        assert_parity(*pair(), X, dtype="float16")
    with pytest.raises(ValueError, match="a target needs a loss"):
        assert_parity(*pair(), X, target=np.zeros(4))


def test_import_does_not_import_torch_and_float64_needs_x64():
    code = (
        "import sys, numpy as np\n"
        "from flax import nnx\n"
        "import flax_arch.testing\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import torch\n"
        "try:\n"
        "    flax_arch.testing.assert_parity(flax_arch.nn.Linear(2, 2, rngs=nnx.Rngs(0)),\n"
        "                                    torch.nn.Linear(2, 2), np.ones((1, 2)))\n"
        "except ValueError as e:\n"
        "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "float64 parity needs 64-bit JAX" in out.stdout
