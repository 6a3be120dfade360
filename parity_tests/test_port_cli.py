"""``python -m flax_arch.convert package.module:callable weights.pth ckpt_dir``: a torch model
named by import path, its weights loaded, ported (:func:`flax_arch.port`) and written as a
Flax checkpoint of the port's state."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torchvision

from flax_arch import port, torch_state_dict
from flax_arch.convert import main
from flax_arch.testing import assert_close
from flax_arch.training.checkpoint import _restore_into, latest

SPEC = "torchvision.models:squeezenet1_1"


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=10).eval()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    return model, path


def restored_port(untrained: torch.nn.Module, shape, dst):
    """A port of ``untrained`` with the checkpoint at ``dst`` restored into it, and its state
    in torch names."""
    fresh = port(untrained.eval(), torch.zeros(*shape))
    mgr = ocp.CheckpointManager(dst, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        _restore_into(mgr, 0, {"model": fresh}, str(dst))
    finally:
        mgr.close()
    return fresh, torch_state_dict(fresh)


def test_ports_a_torchvision_model_to_a_checkpoint(weights, tmp_path, capsys):
    model, path = weights
    dst = tmp_path / "ckpt"
    assert main([SPEC, str(path), str(dst), "--input", "1,3,64,64",
                 "--kwargs", "num_classes=10"]) == 0
    assert f"wrote {dst}" in capsys.readouterr().out
    _, meta = latest(dst)
    assert meta["models"]["model"] == {"name": SPEC, "kwargs": {"num_classes": 10}}
    assert meta["port_input"] == [1, 3, 64, 64] and meta["source"] == "weights.pth"

    # restored into a fresh port of an untrained model, the checkpoint is the torch weights
    fresh, restored = restored_port(torchvision.models.squeezenet1_1(weights=None, num_classes=10),
                                    (1, 3, 64, 64), dst)
    ref = model.state_dict()
    assert sorted(restored) == sorted(ref)
    for key, value in ref.items():
        np.testing.assert_array_equal(restored[key], value.numpy(), err_msg=key)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    out = jax.jit(lambda x: fresh(x))(jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert_close(out, expected, 1e-4, "restored port")  # float32, a deep network


@pytest.mark.parametrize("spec, message", [
    ("torchvision.models:no_such_model", "'torchvision.models' has no 'no_such_model'"),
    ("no_such_package.models:net", "cannot import 'no_such_package.models'"),
])
def test_a_bad_import_path_is_one_line(weights, tmp_path, capsys, spec, message):
    _, path = weights
    assert main([spec, str(path), str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "ckpt").exists()


def test_weights_of_another_model_are_refused(weights, tmp_path, capsys):
    _, path = weights
    assert main(["torchvision.models:resnet18", str(path), str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "does not fit torchvision.models:resnet18" in err and "Missing key(s)" in err
    assert not (tmp_path / "ckpt").exists()


def test_an_untranslatable_model_is_refused_before_writing(tmp_path, capsys):
    model = torch.nn.Unfold(2)  # traced through to F.unfold, which has no translation
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    assert main(["torch.nn:Unfold", str(path), str(tmp_path / "ckpt"),
                 "--kwargs", "kernel_size=2", "--input", "1,2,4,4"]) == 2
    err = capsys.readouterr().err
    assert "1 operation(s) of Unfold; nothing was built" in err
    assert "torch.nn.functional.unfold at node 'unfold'" in err
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.usefixtures("short_clock")
def test_benchmarks_time_a_port_against_its_torch_model(tmp_path):
    """``python -m benchmarks --port SPEC --input SHAPE``: one forward record, both sides
    timed (the numbers themselves are the benchmarks' business: a short clock, as
    conftest.py's short_clock)."""
    import json

    from benchmarks.__main__ import main as bench

    out = tmp_path / "port.json"
    assert bench(["--port", SPEC, "--input", "1,3,32,32", "--quick", "--budget", "0.05",
                  "--json", str(out)]) == 0
    (record,) = json.loads(out.read_text())
    assert record["model"] == SPEC and record["mode"] == "forward" and not record["error"]
    assert record["jax_ms"] > 0 and record["torch_eager_ms"] > 0 and record["batch_size"] == 1


def test_a_timm_model_converts_through_its_builder(tmp_path, capsys):
    """Any zoo's model named by its builder: timm's ``create_model`` with the model's name
    in --kwargs (timm is in the ``zoo`` extra, not the test extra)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    dst = tmp_path / "ckpt"
    assert main(["timm:create_model", str(path), str(dst), "--input", "1,3,32,32",
                 "--kwargs", "model_name=resnet10t", "num_classes=10"]) == 0
    _, meta = latest(dst)
    assert meta["models"]["model"]["kwargs"] == {"model_name": "resnet10t", "num_classes": 10}
    _, restored = restored_port(timm.create_model("resnet10t", pretrained=False, num_classes=10),
                                (1, 3, 32, 32), dst)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(restored[key], value.numpy(), err_msg=key)
