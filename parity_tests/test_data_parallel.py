"""Data parallelism: the trainer's step sharded over 8 (forced host) devices gives what the
1-device step gives on the same global batches."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from flax_arch import get_entry, torch_state_dict
from flax_arch.training.checkpoint import load_model
from flax_arch.training.trainer import TrainConfig, Trainer
from parity_tests.harness import assert_close
from parity_tests.test_train import JAX_SETUP, records
from parity_tests.tolerances import tolerance

# XLA_FLAGS must be set before JAX initialises its backend: the 8-device run is a subprocess.
EIGHT_DEVICES = JAX_SETUP + """
import json, sys
import numpy as np
import flax_arch.models.dcgan
from flax_arch.training.trainer import TrainConfig, Trainer

assert jax.device_count() == 8, jax.devices()
trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])))
metrics = [trainer.train_step(trainer.batch(step)) for step in range(3)]
np.savez(sys.argv[2], **trainer.params(),
         **{f"step {i} {k}": v for i, m in enumerate(metrics) for k, v in m.items()})
"""


def steps(cfg: dict) -> dict[str, np.ndarray]:
    """The parameters and buffers after 3 steps on this process's devices, and each step's
    metrics."""
    trainer = Trainer(TrainConfig(**cfg))
    out = trainer.params()
    metrics = [trainer.train_step(trainer.batch(step)) for step in range(3)]
    assert trainer.mesh.size == jax.device_count()
    return {"initial": out, "final": trainer.params(),
            "metrics": {f"step {i} {k}": np.asarray(v) for i, m in enumerate(metrics)
                        for k, v in m.items()}}

CASES = {  # model: (data shape, kwargs)
    "mlp": ((20, 64), {"hidden_size": 16}),
    "dcgan": ((20, 64, 64, 1), {"ngf": 4, "ndf": 4, "nz": 8}),
}


@pytest.mark.parametrize("model", CASES)
def test_eight_devices_step_like_one(tmp_path, model):
    shape, kwargs = CASES[model]
    family = get_entry("dcgan_generator" if model == "dcgan" else model).family
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.uniform(0, 1, shape).astype(np.float32), y=rng.integers(0, 10, 20))
    # 16 training examples, one global batch of 16 a step (2 a device on 8 devices); SGD:
    # Adam's first steps are sign(g) * lr, which turns rounding-level gradients into lr.
    cfg = dict(model=model, data=str(data), kwargs=kwargs, batch_size=16, optimizer="sgd",
               lr=0.1, out=str(tmp_path / "out"), progress=False)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    eight = tmp_path / "eight.npz"
    child = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, json.dumps(cfg), str(eight)],
                           env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    got = dict(np.load(eight))
    one = steps(cfg)
    assert jax.device_count() == 1

    # Float32 rounding only: the 8-device step sums per-device partial results (the
    # gradient all-reduce, BatchNorm's batch moments) in another order than one device.
    # The tolerances are the parity suite's for the family, relative to max(1, max|ref|).
    tol = tolerance(np.float32, family)
    ref, initial = one["final"], one["initial"]
    assert got.keys() == ref.keys() | one["metrics"].keys()
    moved = max(float(np.max(np.abs(ref[k] - initial[k]))) for k in ref)
    assert moved > 100 * tol, "the steps must change the parameters far beyond the tolerance"
    for key, value in {**ref, **one["metrics"]}.items():
        assert_close(got[key], value, tol, f"8 devices vs 1: {key}")
    # BatchNorm's running statistics are among them: its batch moments span the global batch
    assert any(k.endswith("running_var") for k in ref) == (model == "dcgan")


TWO_HOSTS = JAX_SETUP + """
import sys
from flax_arch.train import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_two_processes_of_four_devices_train_like_one_device(tmp_path):
    # jax.distributed over localhost: 2 processes x 4 CPU devices, one 8-device mesh
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((40, 64)).astype(np.float32), y=rng.integers(0, 10, 40))
    args = ["mlp", "--data", str(data), "--steps", "6", "--batch-size", "16", "--log-every", "1",
            "--ckpt-every", "3", "--no-progress", "--optimizer", "sgd", "--lr", "0.1"]
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    hosts = [subprocess.Popen(
        [sys.executable, "-c", TWO_HOSTS, *args, "--out", str(tmp_path / "hosts"),
         "--distributed", "--coordinator", f"localhost:{port}", "--num-processes", "2",
         "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outs = [h.communicate(timeout=600) for h in hosts]
    assert [h.returncode for h in hosts] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert json.loads(outs[0][0].splitlines()[-1])["devices"] == 8  # after gloo's lines

    trainer = Trainer(TrainConfig("mlp", data=str(data), steps=6, batch_size=16, log_every=1,
                                  optimizer="sgd", lr=0.1, out=str(tmp_path / "one"),
                                  progress=False))
    try:
        trainer.run()
        ref = trainer.params()
    finally:
        trainer.close()
    want, got = records(tmp_path / "one"), records(tmp_path / "hosts")
    tol = tolerance(np.float32, "dense")
    for step in range(1, 7):
        assert_close(got[step]["loss"], want[step]["loss"], tol, f"loss step {step}")
    model, _ = load_model(tmp_path / "hosts" / "checkpoints", "mlp")
    for key, value in torch_state_dict(model).items():
        assert_close(value, ref[f"model/{key}"], tol, key)
