"""``python -m flax_arch.convert``: torch weight files to Flax checkpoints and back, strict by
default, and no output at all from a bad source."""

import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

import flax_arch
import torch_ref
import torch_ref.inception  # noqa: F401
from flax_arch.training.checkpoint import CheckpointError, load_model
from flax_arch.convert import ConversionError, flax_to_torch, main, torch_to_flax
from flax_arch.interop import to_channels_first, to_channels_last
from flax_arch.training.trainer import TrainConfig, train
from parity_tests.harness import assert_close
from parity_tests.tolerances import tolerance

MLP = {"num_inputs": 8, "hidden_size": 16, "num_outputs": 3}


def torch_model(name: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch_ref.get_model(name, **kwargs)
    if name == "inception":  # non-trivial running statistics and a batch count
        model.train()
        with torch.no_grad():
            model(torch.randn(4, kwargs["in_channels"], 7, 6))
    return model.eval()


def save(state_dict, path):
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(dict(state_dict), path)
    else:
        torch.save(state_dict, path)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", ["mlp", "inception"])
def test_round_trip_through_the_cli(tmp_path, name, suffix):
    kwargs = MLP if name == "mlp" else flax_arch.get_entry(name).test.kwargs
    ref = torch_model(name, kwargs)
    src = save(ref.state_dict(), tmp_path / f"weights{suffix}")
    ckpt, back = tmp_path / "flax", tmp_path / f"back{suffix}"
    args = ["--kwargs", *(f"{k}={v}" for k, v in kwargs.items())]
    assert main([name, str(src), str(ckpt), *args]) == 0
    assert main([name, str(ckpt), str(back)]) == 0

    # the Flax checkpoint computes what the torch model computes
    model, meta = load_model(ckpt, name)
    assert meta == {"name": name, "kwargs": kwargs}
    model.eval()
    layout = flax_arch.get_entry(name).test.inputs[0].layout
    x = np.random.default_rng(0).standard_normal(
        (2, 8) if name == "mlp" else (2, kwargs["in_channels"], 7, 6)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
    got = nnx.jit(lambda m, x: m(x))(model, to_channels_last(x, layout))
    got = to_channels_first(np.asarray(got), layout)
    assert_close(got, want, tolerance(np.float32, "layer"), "output")

    # and back: the same keys, dtypes and bits, buffers included
    original = ref.state_dict()
    returned = torch.load(back, weights_only=True) if suffix == ".pt" else \
        safetensors.torch.load_file(back)
    assert set(returned) == set(original)
    for key, value in original.items():
        assert returned[key].dtype == value.dtype, key
        assert torch.equal(returned[key], value), key


def test_strict_lists_every_mismatch_and_writes_nothing(tmp_path, capsys):
    sd = torch_model("mlp", MLP).state_dict()
    sd["extra.weight"] = torch.zeros(2)
    del sd["4.bias"]
    src = save(sd, tmp_path / "w.pt")
    wider = {**MLP, "hidden_size": 17}
    dst = tmp_path / "flax"
    assert main(["mlp", str(src), str(dst), "--kwargs", str(wider).replace("'", '"')]) == 2
    err = capsys.readouterr().err
    assert "missing keys (1): 4.bias" in err and "unexpected keys (1): extra.weight" in err
    for key in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight"):
        assert f"shape mismatch for {key}" in err
    assert list(tmp_path.iterdir()) == [src]

    # not strict: what fits is loaded and the rest is reported
    report = torch_to_flax("mlp", MLP, src, dst, strict=False)
    assert report.missing_keys == ["4.bias"] and report.unexpected_keys == ["extra.weight"]
    model, _ = load_model(dst)
    np.testing.assert_array_equal(np.asarray(model[4].weight[...]), sd["4.weight"].numpy().T)
    assert main(["mlp", str(src), str(tmp_path / "flax2"), "--no-strict", "--kwargs",
                 *(f"{k}={v}" for k, v in MLP.items())]) == 0
    assert "missing keys (left at their initial values): 4.bias" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_gets_a_clear_error_and_no_output(tmp_path, suffix, capsys):
    whole = save(torch_model("mlp", MLP).state_dict(), tmp_path / f"whole{suffix}")
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    before = sorted(tmp_path.iterdir())
    assert main(["mlp", str(cut), str(tmp_path / "flax"), "--kwargs",
                 *(f"{k}={v}" for k, v in MLP.items())]) == 2
    assert f"cannot read {cut} (truncated, corrupt, or not a {suffix} weights file)" in \
        capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before


def test_nested_state_dict_needs_its_key(tmp_path):
    sd = torch_model("mlp", MLP).state_dict()
    src = save({"model": sd, "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(ConversionError, match=r"entries 'epoch' \(int\), 'model' .* --key NAME"):
        torch_to_flax("mlp", MLP, src, tmp_path / "a")
    torch_to_flax("mlp", MLP, src, tmp_path / "b", key="model")
    assert not (tmp_path / "a").exists() and (tmp_path / "b").is_dir()


def test_existing_outputs_are_never_overwritten(tmp_path):
    src = save(torch_model("mlp", MLP).state_dict(), tmp_path / "w.pt")
    ckpt = tmp_path / "flax"
    torch_to_flax("mlp", MLP, src, ckpt)
    with pytest.raises(ConversionError, match="already exists"):
        torch_to_flax("mlp", MLP, src, ckpt)
    (tmp_path / "out.pt").write_bytes(b"mine")
    with pytest.raises(ConversionError, match="already exists"):
        flax_to_torch("mlp", None, ckpt, tmp_path / "out.pt")
    assert (tmp_path / "out.pt").read_bytes() == b"mine"


def test_checkpoint_of_another_model_or_arguments_is_refused(tmp_path):
    ckpt = tmp_path / "flax"
    torch_to_flax("mlp", MLP, save(torch_model("mlp", MLP).state_dict(), tmp_path / "w.pt"),
                  ckpt)
    with pytest.raises(CheckpointError, match=r"holds model\(s\) \['mlp'\], not 'ae'"):
        flax_to_torch("ae", None, ckpt, tmp_path / "x.pt")
    with pytest.raises(ConversionError, match="built with .*'hidden_size': 16.*, not"):
        flax_to_torch("mlp", {**MLP, "hidden_size": 32}, ckpt, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_a_training_runs_checkpoint_converts_to_torch(tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((20, 8)).astype(np.float32), y=rng.integers(0, 3, 20))
    out = tmp_path / "run"
    train(TrainConfig("mlp", data=str(path), kwargs={"hidden_size": 16}, steps=2,
                      batch_size=8, out=str(out), progress=False))
    dst = tmp_path / "trained.pt"
    assert main(["mlp", str(out / "checkpoints"), str(dst)]) == 0
    trained = torch_ref.get_model("mlp", **MLP)
    trained.load_state_dict(torch.load(dst, weights_only=True))  # strict
    model, _ = load_model(out / "checkpoints", "mlp")
    x = rng.standard_normal((4, 8)).astype(np.float32)
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(model(x)), want, tolerance(np.float32, "dense"), "output")
    assert int(nnx.state(model, nnx.Param)["0"]["weight"][...].shape[0]) == 8
