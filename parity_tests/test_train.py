"""The trainer: every kind of task learns, checkpoints resume exactly and survive a kill
mid-save, and bad data or another run's checkpoints are refused with nothing touched."""

import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax_arch import get_entry, registry
from flax_arch.cli import parse_kwargs
from flax_arch.losses import binary_cross_entropy
from flax_arch.train import main
from flax_arch.training import checkpoint
from flax_arch.training.data import DataError, digits
from flax_arch.training.trainer import TrainConfig, Trainer, plan, train

# the suite's numerics (parity_tests/conftest.py), for subprocesses that must match this one
JAX_SETUP = """
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")
"""


def config(model, out, **kw) -> TrainConfig:
    return TrainConfig(model, out=str(out), progress=False, **kw)


def records(out: Path, split: str = "train") -> dict[int, dict]:
    """The last logged record of each step."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r["split"] == split}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under root with its size, modification time and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def unit_data(tmp_path_factory) -> Path:
    """40 random 784-pixel images in [0, 1]: 32 training examples, 4 batches of 8 an epoch."""
    path = tmp_path_factory.mktemp("data") / "unit.npy"
    np.save(path, np.random.default_rng(0).uniform(0, 1, (40, 784)).astype(np.float32))
    return path


# ----------------------------------------------------------------------------- learning


def test_classifier_learns_digits(tmp_path):
    summary = train(config("mlp", tmp_path, steps=150, batch_size=32, lr=3e-3, eval_every=50,
                           log_every=25))
    # digits, 64 inputs, 10 classes, 359 held-out images; chance is 0.1 (0.94 was measured)
    assert summary["kwargs"]["model"]["kwargs"] == {"num_inputs": 64, "hidden_size": 32,
                                                    "num_outputs": 10}
    assert summary["val"]["accuracy"] > 0.85
    assert sorted(records(tmp_path)) == [25, 50, 75, 100, 125, 150]
    assert sorted(records(tmp_path, "val")) == [50, 100, 150]
    assert checkpoint.latest(tmp_path / "checkpoints")[0] == 150


@pytest.mark.parametrize("model, metric", [("ae", "mse"), ("vae", "mse")])
def test_generative_models_learn_digits_and_draw(tmp_path, model, metric):
    trainer = Trainer(config(model, tmp_path, steps=60, batch_size=32, eval_every=1000))
    try:
        before = trainer.evaluate()[metric]
        after = trainer.run()["val"][metric]
    finally:
        trainer.close()
    assert after < 0.5 * before, (before, after)
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "samples.png")
    assert picture.ndim == 3 and min(picture.shape[:2]) > 50


@pytest.mark.parametrize("model, kwargs, shape", [
    ("rnn_classifier", {}, (8, 8)),  # row by row
    ("rnn_classifier", {"num_inputs": 16}, (4, 16)),  # two rows a step
    ("conv_mlp", {"num_inputs": 64}, (1, 64)),  # the whole digit in one step
])
def test_sequence_models_read_the_digit_in_steps_of_num_inputs_pixels(model, kwargs, shape):
    got = plan(TrainConfig(model, kwargs=kwargs))
    assert got.task.spec.shape == shape == got.x.shape[1:]
    images, labels = digits()
    np.testing.assert_array_equal(got.x.reshape(-1, 64), images.reshape(-1, 64))
    np.testing.assert_array_equal(got.y, labels)


def test_per_step_classifier_learns_digits(tmp_path):
    # conv_mlp predicts at every step (target layout NL): the label is repeated over steps
    summary = train(config("conv_mlp", tmp_path, steps=40, batch_size=32, lr=3e-3,
                           kwargs={"num_inputs": 64}))
    assert summary["val"]["accuracy"] > 0.6


@pytest.mark.parametrize("size, z_shape", [("test", (1, 1, 16)), ("bench", (1, 1, 100))])
def test_dcgan_pairs_the_generator_and_discriminator_on_64x64_digits(size, z_shape):
    got = plan(TrainConfig("dcgan", size=size))
    assert got.task.z_shape == z_shape
    assert got.x.shape == (1797, 64, 64, 1) and got.y is None
    assert 0.0 <= got.x.min() and got.x.max() <= 1.0  # scaled to tanh's [-1, 1] in the step
    assert got.task.kwargs["generator"]["nc"] == got.task.kwargs["discriminator"]["nc"] == 1


def test_the_size_arguments_are_those_the_registry_entry_names(monkeypatch, tmp_path):
    # The data sets the arguments of the entry's channels_arg and classes_arg, and no others.
    mlp = get_entry("mlp")
    assert plan(TrainConfig("mlp")).task.kwargs["model"] == {
        "num_inputs": 64, "hidden_size": 32, "num_outputs": 10}
    monkeypatch.setitem(registry._REGISTRY, "mlp",
                        dataclasses.replace(mlp, channels_arg=None, classes_arg=None))
    got = plan(TrainConfig("mlp"))  # the test configuration's 16 inputs and 5 classes stay
    assert got.task.kwargs["model"] == {"num_inputs": 16, "hidden_size": 32, "num_outputs": 5}
    assert got.x.shape[1:] == (16,)  # the digits resized to 4 x 4 to fit them
    with pytest.raises(DataError, match=r"model 'mlp' has 5 classes"):
        Trainer(config("mlp", tmp_path))


def test_saturated_discriminator_keeps_gradients_finite():
    # A confident DCGAN discriminator's sigmoid reaches exactly 0 or 1 in float32 (first
    # seen as NaN losses on a GPU): the clamped log terms must not give 0 * inf = NaN.
    p = jnp.array([0.0, 1.0, 0.5], jnp.float32)
    t = jnp.array([1.0, 0.0, 1.0], jnp.float32)
    loss, grad = jax.value_and_grad(lambda p: binary_cross_entropy(p, t))(p)
    assert float(loss) == pytest.approx((100 + 100 + np.log(2)) / 3, rel=1e-6)  # torch's value
    np.testing.assert_allclose(np.asarray(grad), [0.0, 0.0, -2 / 3], rtol=1e-6)


# ----------------------------------------------------------------------------- checkpoints

KILL_AT_SAVE = JAX_SETUP + """
import os, signal, sys
from pathlib import Path
import flax_arch.models.autoencoder
from orbax.checkpoint._src.path import async_path
from flax_arch.training.trainer import TrainConfig, train

rename = async_path.rename


async def rename_or_die(src, dst):
    # the last act of a save: the complete temporary directory becomes the step
    if Path(dst).name == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)
    return await rename(src, dst)


async_path.rename = rename_or_die
train(TrainConfig("vae", data=sys.argv[1], out=sys.argv[2], steps=10, batch_size=8,
                  ckpt_every=3, log_every=1, progress=False))
"""


def test_killed_save_leaves_the_previous_checkpoint_and_resume_is_exact(tmp_path, unit_data):
    # A run is killed while its step-9 checkpoint is being written, after logging the losses
    # of steps 1-9. The VAE draws noise every step, so its losses depend on the parameters,
    # the optimizer, the RNG and the data order (4 batches an epoch: steps 7-9 cross into
    # epoch 2), all of which the resumed run must restore from step 6.
    out = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", KILL_AT_SAVE, str(unit_data), str(out), "9"],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert [p.name for p in ckpts.iterdir() if "tmp" in p.name], "no save was interrupted"
    assert not (ckpts / "9").exists()
    assert checkpoint.latest(ckpts)[0] == 6
    uninterrupted = records(out)
    assert sorted(uninterrupted) == list(range(1, 10))

    summary = train(config("vae", out, data=str(unit_data), steps=10, batch_size=8,
                           ckpt_every=3, log_every=1))
    assert summary["resumed_from"] == 6
    assert not [p.name for p in ckpts.iterdir() if "tmp" in p.name]
    assert checkpoint.latest(ckpts)[0] == 10
    resumed = records(out)
    # bit-exact: the same compiled step on the same state, batch and key, on one CPU
    assert [resumed[s]["loss"] for s in (7, 8, 9)] == [uninterrupted[s]["loss"] for s in (7, 8, 9)]


def test_another_runs_checkpoints_are_refused_untouched(tmp_path, unit_data):
    out = tmp_path / "run"
    train(config("ae", out, data=str(unit_data), steps=1, batch_size=8))
    before = snapshot(out)
    for model, kwargs, expected in [
        ("vae", {}, "models.model.name: expected 'vae', the checkpoint has 'ae'"),
        ("ae", {}, "batch_size: expected 16, the checkpoint has 8"),
    ]:
        with pytest.raises(checkpoint.CheckpointError, match="another run") as err:
            Trainer(config(model, out, data=str(unit_data), steps=4, batch_size=16,
                           kwargs=kwargs))
        assert expected in str(err.value)
    assert snapshot(out) == before

    stray = tmp_path / "stray"
    (stray / "checkpoints").mkdir(parents=True)
    (stray / "checkpoints" / "notes.txt").write_text("mine")
    with pytest.raises(checkpoint.CheckpointError, match="no flax_arch checkpoint"):
        Trainer(config("ae", stray, data=str(unit_data), batch_size=8))
    assert snapshot(stray) == {"checkpoints/notes.txt": snapshot(stray)["checkpoints/notes.txt"]}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("arrays, model, message", [
    ({"x": np.zeros((10, 1, 8, 8), np.float32)}, "mlp",
     r"x has shape \(10, 1, 8, 8\); model 'mlp' expects x of rank 2: \(batch, features\)"),
    ({"x": np.zeros((10, 64), np.int64), "y": np.zeros(10, np.int64)}, "mlp",
     r"x has dtype int64; model 'mlp' expects floating-point inputs"),
    ({"x": np.zeros((10, 64), np.float32)}, "mlp", r"must be a .npz holding integer labels"),
    ({"x": np.zeros((10, 64), np.float32), "y": np.zeros(10, np.float32)}, "mlp",
     r"y has dtype float32; expected integer class labels"),
    ({"x": np.zeros((10, 64), np.float32), "y": np.arange(10)}, "rnn_classifier",
     r"x has shape \(10, 64\); model 'rnn_classifier' expects x of rank 3"),
    ({"x": np.full((10, 784), 2.0, np.float32)}, "vae",
     r"x ranges over \[2, 2\]; model 'vae' expects values in \[0, 1\]"),
    ({"x": np.zeros((10, 700), np.float32)}, "vae", r"VAE expects 784 values per sample"),
])
def test_bad_data_is_refused_naming_what_was_expected(tmp_path, arrays, model, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        Trainer(config(model, tmp_path / "out", data=str(path), batch_size=4))
    assert not (tmp_path / "out").exists()


def test_labels_beyond_the_models_classes_are_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((10, 64), np.float32), y=np.arange(10))
    with pytest.raises(DataError, match=r"model 'mlp' has 4 classes, labels must lie in \[0, 4\)"):
        Trainer(config("mlp", tmp_path / "out", data=str(path), batch_size=4,
                       kwargs={"num_outputs": 4}))


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["no_such_model", "--out", str(tmp_path)]) == 2
    assert "unknown model 'no_such_model'; trainable models:" in capsys.readouterr().err
    # registry tasks without training data here: a layer and a shape-keeping block (regress),
    # U-Net (segment)
    for name in ("conv1d", "res_layer", "unet"):
        assert main([name, "--out", str(tmp_path)]) == 2
        assert f"{name!r} has no training task" in capsys.readouterr().err
    assert main(["dcgan_generator", "--out", str(tmp_path)]) == 2
    assert "trains as part of the GAN 'dcgan'" in capsys.readouterr().err
    assert main(["mlp", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "missing.npz' does not exist" in capsys.readouterr().err
    assert main(["mlp", "--kwargs", "width=3", "--out", str(tmp_path)]) == 2
    assert "takes no argument(s) ['width']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_parse_kwargs():
    assert parse_kwargs(['{"num_classes": 10, "sizes": [1, 2]}']) == {"num_classes": 10,
                                                                       "sizes": [1, 2]}
    assert parse_kwargs(["nc=1", "p=0.5", "name=relu", "flag=true"]) == {
        "nc": 1, "p": 0.5, "name": "relu", "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_kwargs(["nc"])
