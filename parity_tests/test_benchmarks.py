"""The benchmark harness works: CLI parsing, bad input, records, FLOP counts, peaks, a tiny run,
and the timing statistics on synthetic timings.

Timing numbers are not asserted (they depend on the machine and its load); what is checked is
that every requested case yields a record with the fields DESIGN.md names, that failures are
reported rather than dropped, that usage errors, and only they, exit non-zero, and that the
rules of benchmarks/stats.py flag what they should (on made-up timings, with a fake clock).
"""

import dataclasses
import json
import math
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import torch_ref
from benchmarks import flops, harness, report, stats, steps, suite_profile, timing
from benchmarks.record import Case, Options, Record
from benchmarks.__main__ import USAGE_ERROR, main, parse_args
from benchmarks.device import DeviceInfo
from flax_arch import nn, registry

pytest_plugins = ["pytester"]  # test_suite_profile_reports_each_files_compilations

REQUIRED = ("model", "mode", "device", "dtype", "batch_size", "jax_ms", "torch_eager_ms",
            "torch_compile_ms", "speedup", "jax_compile_s", "flops", "precision", "threads",
            "versions", "date", "roofline", "peak_gflops", "error", "jax_iqr_ms",
            "torch_eager_iqr_ms", "stable", "unstable_reasons", "other_cores", "samples_ms",
            "speedup_ci", "rounds", "rounds_kept", "lead_in_ms", "kept", "cpu_per_wall")
# a budget that keeps the CLI tests short; their records may well be unstable
ROOT = pathlib.Path(__file__).resolve().parents[1]
# and the fixture short_clock (conftest.py); every case in the test's process, whether or not
# its JAX started (test_each_mode_runs_in_a_process_of_its_own forks)
FAST = ["--budget", "0.05", "--one-process"]


def test_parse_args_defaults_and_lists():
    args = parse_args([])
    assert args.models == ["all"] and args.modes == ["forward", "train"]
    assert args.dtype == ["float32"] and args.batch_size is None and not args.torch_compile
    args = parse_args(["--models", "mlp,conv1d", "lstm", "--batch-size", "1,32", "--dtype",
                       "float32,bfloat16", "--modes", "train", "--quick", "--torch-compile"])
    assert args.models == ["mlp", "conv1d", "lstm"] and args.batch_size == [1, 32]
    assert args.dtype == ["float32", "bfloat16"] and args.modes == ["train"]
    assert args.quick and args.torch_compile


@pytest.mark.parametrize("argv", [["--dtype", "float16"], ["--modes", "backward"],
                                  ["--batch-size", "two"], ["--budget", "0"],
                                  ["--precision", "fp8"], ["--cores", "0"]])
def test_malformed_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == USAGE_ERROR
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--models", "no_such_model"], "unknown model(s) skipped: no_such_model"),
    (["--models", "linear_regression", "--batch-size", "0,-3"], "impossible batch size"),
])
def test_nothing_valid_to_run_is_a_usage_error(argv, message, capsys):
    assert main(argv) == USAGE_ERROR
    err = capsys.readouterr().err
    assert message in err and "nothing to run" in err


def test_more_cores_than_available_is_a_usage_error(capsys):
    assert main(["--cores", "100000", "--models", "mlp"]) == USAGE_ERROR
    assert "core(s) available" in capsys.readouterr().err


def test_list_names_every_registered_model(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in flax_arch.list_models())


@pytest.mark.usefixtures("short_clock")
def test_quick_run_writes_records_table_and_chart(tmp_path, capsys):
    """Bad names and sizes are skipped with a message; every valid case gets a full record."""
    out = tmp_path / "bench.json"
    png, md = tmp_path / "bench.png", tmp_path / "bench.md"
    code = main(["--quick", "--models", "linear_regression,mlp,no_such_model", "--batch-size",
                 "0,3", *FAST, "--json", str(out), "--plot", str(png), "--markdown", str(md)])
    assert code == 0
    captured = capsys.readouterr()
    assert "no_such_model" in captured.err and "impossible batch size" in captured.err
    records = json.loads(out.read_text())
    assert [(r["model"], r["mode"]) for r in records] == [
        ("linear_regression", "forward"), ("linear_regression", "train"),
        ("mlp", "forward"), ("mlp", "train")]
    for r in records:
        assert set(REQUIRED) <= set(r)
        assert r["error"] is None and r["batch_size"] == 3 and r["dtype"] == "float32"
        assert r["jax_ms"] > 0 and r["torch_eager_ms"] > 0 and r["jax_compile_s"] > 0
        assert r["rounds"] == len(r["kept"]) == len(r["samples_ms"]["jax"]) >= 1
        assert r["rounds_kept"] == sum(r["kept"]) and r["lead_in_ms"] == 25
        if r["speedup_ci"] is not None:  # the median paired ratio inside its interval
            low, high = r["speedup_ci"]
            assert low <= r["speedup"] <= high
        assert r["speedup"] > 0
        assert r["size"] == "quick" and isinstance(r["stable"], bool)
        assert r["jax_iqr_ms"] >= 0 and r["torch_eager_iqr_ms"] >= 0
        assert len(r["samples_ms"]["jax"]) >= 1 and len(r["samples_ms"]["torch_eager"]) >= 1
        assert r["stable"] == (r["unstable_reasons"] == [])
        assert r["torch_compile_ms"] is None  # not asked for
        assert r["flops"] > 0 and r["flops_source"] == "XLA cost analysis"
        assert math.isclose(r["roofline"], r["flops"] / r["jax_ms"] / 1e6 / r["peak_gflops"])
        assert r["threads"]["torch"] >= 1 and r["threads"]["xla"] >= 1
        assert r["versions"]["jax"] == jax.__version__ and r["versions"]["torch"]
        assert r["process"] == "shared"  # --one-process
    assert "machine check: a fixed single-threaded loop" in captured.err
    train = next(r for r in records if r["model"] == "mlp" and r["mode"] == "train")
    forward = next(r for r in records if r["model"] == "mlp" and r["mode"] == "forward")
    assert train["flops"] > 2 * forward["flops"]  # backward and the Adam update
    assert train["optimizer"].startswith("Adam(")
    for text in (captured.out, md.read_text()):
        assert "speedup" in text and "versions: jax" in text and "threads: torch" in text
        assert "timing: sides alternate block by block" in text and "rounds kept" in text
        assert "stable case(s)" in text or "no stable case" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    merged = tmp_path / "merged.json"  # --report re-renders (and merges) saved records
    assert main(["--report", str(out), str(out), "--json", str(merged)]) == 0
    assert json.loads(merged.read_text()) == records + records
    assert "mlp" in capsys.readouterr().out
    assert main(["--report", str(tmp_path / "missing.json")]) == USAGE_ERROR


class _Broken(nn.Linear):
    def __call__(self, x):
        raise ValueError("deliberately broken")


@pytest.mark.usefixtures("short_clock")
def test_a_failing_model_is_reported_not_dropped(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(registry._REGISTRY, "broken", registry.ModelEntry(
        "broken", "test", _Broken, task="regress",
        test=registry.Config({"in_features": 3, "out_features": 2},
                             (registry.Input((2, 3), "NC"),), registry.Input((2, 2), "NC")),
        bench=registry.Config({"in_features": 3, "out_features": 2},
                              (registry.Input((2, 3), "NC"),), registry.Input((2, 2), "NC")),
        outputs=("NC",), loss="mse"))
    monkeypatch.setitem(torch_ref.registry._MODELS, "broken", torch.nn.Linear)
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "broken,linear_regression", "--modes", "forward",
                 *FAST, "--json", str(out)]) == 0
    records = {r["model"]: r for r in json.loads(out.read_text())}
    assert "deliberately broken" in records["broken"]["error"]
    assert records["broken"]["jax_ms"] is None
    assert records["linear_regression"]["error"] is None
    assert "FAILED: ValueError: deliberately broken" in capsys.readouterr().out


@pytest.mark.usefixtures("short_clock")
def test_torch_compile_failure_keeps_the_rest(monkeypatch, tmp_path):
    def no_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", no_compile)
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "linear_regression", "--modes", "forward",
                 *FAST, "--torch-compile", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert "no C++ compiler here" in r["torch_compile_error"]
    assert r["torch_compile_ms"] is None and r["jax_ms"] > 0 and r["error"] is None


@pytest.mark.usefixtures("short_clock")
def test_a_dtype_the_device_lacks_is_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(DeviceInfo, "supports",
                        lambda self, dtype: (dtype == "float32", "no bfloat16 on this device"))
    assert main(["--quick", "--models", "linear_regression", "--dtype", "bfloat16",
                 "--one-process"]) == \
        USAGE_ERROR
    assert "bfloat16 skipped: no bfloat16 on this device" in capsys.readouterr().err
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "linear_regression", "--modes", "forward", "--dtype",
                 "bfloat16,float32", *FAST, "--json", str(out)]) == 0
    assert [r["dtype"] for r in json.loads(out.read_text())] == ["float32"]


@pytest.mark.usefixtures("short_clock")
def test_save_writes_under_the_current_directory_or_the_folder_given(tmp_path, monkeypatch):
    """--save never writes into the installed package: by default benchmarks/results under the
    current directory (the repository's own from its root), else the folder given."""
    monkeypatch.chdir(tmp_path)
    argv = ["--quick", "--models", "linear_regression", "--modes", "forward", *FAST, "--save"]
    assert main(argv) == 0
    assert main(argv + [str(tmp_path / "elsewhere")]) == 0
    for folder in (tmp_path / "benchmarks" / "results", tmp_path / "elsewhere"):
        (json_file,) = folder.glob("cpu_*_quick.json")
        assert {p.suffix for p in folder.iterdir()} == {".json", ".md", ".png"}
        assert json.loads(json_file.read_text())[0]["model"] == "linear_regression"


ISOLATED = """
import json, os, sys
import benchmarks
benchmarks.configure_process()
from benchmarks import isolate, timing
from benchmarks.__main__ import main

seen = []
def child(x):
    seen.append(x)  # the child's heap, not this one
    return os.getpid(), 2 * x
pid, value = isolate.run(child, 21)
assert value == 42 and pid != os.getpid() and seen == [], (pid, value, seen)
for fn, error in ((lambda: 1 / 0, ZeroDivisionError), (lambda: os._exit(3), isolate.CaseProcessDied)):
    try:
        isolate.run(fn)
        raise AssertionError("no error")
    except error as err:
        message = str(err)
assert "exit status 3" in message, message

timing.MIN_BUDGET_ROUNDS = 2  # the short clock, as conftest's short_clock
assert main(["--quick", "--models", "linear_regression", "--modes", "forward", "--budget", "0.05",
             "--json", sys.argv[1]]) == 0
assert not isolate.backends_started()  # the cases started JAX in their own processes only

import jax.numpy as jnp
jnp.ones(1).block_until_ready()
try:
    isolate.run(child, 1)
    raise AssertionError("forked after JAX started")
except RuntimeError as err:
    assert "already started" in str(err)
print("ok")
"""


def test_each_mode_runs_in_a_process_of_its_own(tmp_path):
    """``python -m benchmarks`` forks a child per mode of each case, after the imports and
    before JAX starts (benchmarks/isolate.py): values and exceptions come back, a child that
    dies is named, the parent's JAX stays unstarted, and forking after JAX started is refused.
    A fresh interpreter: this one's JAX started long ago (its main() calls run the cases in
    this process).""" 
    import subprocess
    import sys

    out = tmp_path / "isolated.json"
    run = subprocess.run([sys.executable, "-c", ISOLATED, str(out)], capture_output=True,
                         text=True, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
    records = json.loads(out.read_text())
    assert [(r["mode"], r["process"], r["error"]) for r in records] == [
        ("forward", "own", None)]
    assert all(r["jax_ms"] > 0 and r["torch_eager_ms"] > 0 for r in records)
    assert "processes: each mode of each model in a process of its own" in run.stdout


def test_the_installed_benchmark_is_not_a_top_level_benchmarks_package():
    """The wheel installs the benchmark as flax_arch_benchmarks (setup.py maps the folder), so
    that it cannot shadow a user's own `benchmarks`."""
    import importlib.metadata
    import importlib.util

    top = importlib.metadata.distribution("flax-arch").read_text("top_level.txt").split()
    assert "benchmarks" not in top and "flax_arch_benchmarks" in top
    spec = importlib.util.find_spec("flax_arch_benchmarks")
    assert spec is not None and spec.origin.endswith("benchmarks/__init__.py")


@pytest.mark.usefixtures("short_clock")
def test_time_limit_reports_the_rest_as_skipped(tmp_path):
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "mlp,linear_regression", "--time-limit", "1e-6",
                 "--one-process", "--json", str(out)]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4
    assert all(r["skipped"].startswith("skipped: --time-limit") and r["error"] is None
               for r in records)


def _tiny_cnn(*, rngs):
    return nn.Sequential(nn.Conv2d(2, 4, 3, rngs=rngs), nn.BatchNorm2d(4),
                             nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2))


@pytest.fixture
def tiny_cnn(monkeypatch):
    """A registered model with batch statistics and both poolings, and its torch twin."""
    cfg = registry.Config({}, (registry.Input((3, 2, 10, 10), "NCHW"),),
                          registry.Input((3, 4, 2, 2), "NCHW"))
    monkeypatch.setitem(registry._REGISTRY, "tiny_cnn", registry.ModelEntry(
        "tiny_cnn", "test", _tiny_cnn, task="regress", test=cfg, bench=cfg, outputs=("NCHW",), loss="mse"))
    monkeypatch.setitem(torch_ref.registry._MODELS, "tiny_cnn", lambda: torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2)))
    return "tiny_cnn"


@pytest.mark.parametrize("name", ["mlp", "tiny_cnn"])
def test_both_sides_time_the_same_computation(name, tiny_cnn):
    """The timed calls agree: forward outputs, and the losses of successive training steps
    (train-mode batch statistics, Adam updates carried from step to step)."""
    device = DeviceInfo("cpu", "test cpu", "cpu", 1, 1)
    pair = steps.build_pair(Case(name, "float32", None), Options(size="test"), device)
    jax_out = steps.jax_forward(pair, 0).run()
    torch_out = steps.torch_forward(pair, device, pair.torch_model)()
    np.testing.assert_allclose(
        jax_out, flax_arch.to_channels_last(torch_out.numpy(),
                                            flax_arch.get_entry(name).outputs[0]),
        rtol=1e-5, atol=1e-5)
    opt, _ = steps.adam(pair.torch_model.parameters())
    jax_step = steps.jax_train(pair, 0)
    torch_step = steps.torch_train(pair, device, steps.WithLoss(pair.torch_model, pair.loss), opt)
    losses = [(float(jax_step.run()), torch_step().item()) for _ in range(4)]
    np.testing.assert_allclose(*zip(*losses), rtol=1e-4)
    assert losses[-1][0] < losses[0][0]  # the updates are applied


def test_bfloat16_casts_both_sides():
    device = DeviceInfo("cpu", "test cpu", "cpu", 1, 1)
    pair = steps.build_pair(Case("mlp", "bfloat16", 2), Options(size="test"), device)
    assert all(p.dtype == torch.bfloat16 for p in pair.torch_model.parameters())
    params = jax.tree.leaves(nnx.state(pair.flax_model))
    assert all(p.dtype == jnp.bfloat16 for p in params if jnp.issubdtype(p.dtype, jnp.floating))
    assert pair.torch_inputs[0].dtype == torch.bfloat16
    assert pair.flax_inputs[0].dtype == jnp.bfloat16 and pair.flax_inputs[0].shape == (2, 16)


def test_jaxpr_flops_count_scans_by_length():
    w, xs = jnp.ones((16, 16)), jnp.ones((10, 4, 16))

    def rnn(w, xs):
        return jax.lax.scan(lambda h, x: (jnp.tanh(x @ w + h @ w), None), jnp.zeros((4, 16)),
                            xs)[0]

    per_step = 2 * (2 * 4 * 16 * 16)
    counted = flops.jaxpr_flops(jax.make_jaxpr(rnn)(w, xs))
    assert counted == 10 * per_step
    xla = flops.xla_flops(jax.jit(rnn).lower(w, xs).compile())
    assert xla < counted  # XLA takes the loop body once
    assert flops.per_call(xla, counted)[0] == counted
    assert flops.per_call(0.9 * counted, counted) == (0.9 * counted, "XLA cost analysis")
    assert flops.per_call(None, counted)[0] == counted

    def conv(x, k):  # NHWC x HWIO: 2 * output elements * kernel taps * input channels
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))
    assert flops.jaxpr_flops(jax.make_jaxpr(conv)(x, k)) == 2 * (2 * 6 * 6 * 5) * (3 * 3 * 3)
    assert flops.xla_flops(jax.jit(conv).lower(x, k).compile()) == 2 * (2 * 6 * 6 * 5) * 27

    def conv_transpose(x, k):  # stride 2, padding 1: zeros of dilation and padding not counted
        return jax.lax.conv_transpose(x, k, (2,), [(1, 1)], dimension_numbers=("NWC", "WIO", "NWC"))

    x, k = jnp.ones((2, 5, 3)), jnp.ones((3, 3, 5))  # out[2i + j - 1] += x[i] k[j]: of the
    expected = 2 * (2 * 5 * 3) * (5 * 3 - 2)  # 5 x 3 (i, j) pairs, 2 land in the padding
    assert flops.jaxpr_flops(jax.make_jaxpr(conv_transpose)(x, k)) == expected
    assert flops.xla_flops(jax.jit(conv_transpose).lower(x, k).compile()) == expected


def test_peaks_follow_the_stated_formulas():
    avx512 = DeviceInfo("cpu", "x", "cpu", 2, 2, frozenset({"avx512f", "avx512_bf16"}), 2.3)
    assert avx512.peak_gflops("float32", "highest")[0] == pytest.approx(2 * 2.3 * 64)
    assert avx512.peak_gflops("bfloat16", "highest")[0] == pytest.approx(2 * 2.3 * 128)
    avx2 = DeviceInfo("cpu", "x", "cpu", 4, 4, frozenset({"avx2", "fma"}), 3.0)
    assert avx2.peak_gflops("float32", "highest")[0] == pytest.approx(4 * 3.0 * 32)
    assert not avx2.supports("bfloat16")[0] and avx2.supports("float32")[0]
    h100 = DeviceInfo("gpu", "NVIDIA H100 80GB HBM3", "cuda", 16, 16,
                      gpu_name="NVIDIA H100 80GB HBM3")
    assert h100.peak_gflops("float32", "highest")[0] == 67_000
    assert h100.peak_gflops("float32", "tf32")[0] == pytest.approx(494_700)
    assert h100.peak_gflops("bfloat16", "highest")[0] == pytest.approx(989_400)
    unknown = DeviceInfo("gpu", "Some GPU", "cuda", 1, 1, gpu_name="Some GPU")
    assert unknown.peak_gflops("float32", "highest")[0] is None


def test_geomean_and_table_of_a_failed_record():
    assert stats.geomean([1.0, 4.0, None]) == pytest.approx(2.0)
    rec = Record(model="m", mode="train", dtype="float32", batch_size=2, device="cpu",
                         error="ValueError: nope", versions={"jax": "x"}, date="today")
    assert "FAILED: ValueError: nope" in report.table([rec])


# ----------------------------------------------------------------------------- statistics


def test_quartiles_and_iqr_interpolate_as_numpy():
    xs = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0]
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    assert stats.quartiles(xs) == pytest.approx((q1, q2, q3))
    assert stats.iqr(xs) == pytest.approx(q3 - q1)
    assert stats.relative_spread(xs) == pytest.approx((q3 - q1) / q2)
    assert stats.quartiles([2.0]) == (2.0, 2.0, 2.0) and stats.iqr([2.0]) == 0.0
    assert stats.relative_spread([2.0]) == math.inf  # one sample says nothing of its spread
    with pytest.raises(ValueError, match="no samples"):
        stats.quartiles([])


def test_warm_up_ends_where_the_timings_stop_trending():
    # a first-call cost decaying over five blocks, then flat within 1%
    warm = [10.0, 5.0, 3.0, 2.0, 1.5, 1.0, 1.01, 0.99, 1.0, 1.0, 1.01]
    first = next(n for n in range(1, len(warm) + 1) if stats.settled(warm[:n]))
    # the first halves of 3 within 10%: [1.5, 1.0, 1.01] and [0.99, 1.0, 1.0] (medians 1%
    # apart); every pair of halves before differs by 50% or more
    assert first == 10
    assert not stats.settled([1.0] * 5)  # too few blocks to judge
    assert stats.settled([1.0] * 6)
    assert not stats.settled([1.0, 1.0, 1.0, 1.3, 1.3, 1.3])  # a step up is not settled


def test_drift_is_a_change_of_state_not_noise():
    step = [1.0, 1.01, 0.99, 1.0, 1.2, 1.21, 1.19, 1.2]
    assert stats.drift(step) == pytest.approx((1.0, 1.2))
    assert stats.drift(step[:3]) is None  # too few to halve
    # noise around one level: the halves' medians 14% apart (1.1, 0.95), their
    # interquartile ranges overlapping ([0.925, 1.24] and [0.86, 1.15])
    noisy = [1.0, 1.3, 0.8, 1.2, 0.9, 1.25, 0.8, 1.2, 0.9, 1.0, 0.85, 1.25]
    assert np.median(noisy[6:]) / np.median(noisy[:6]) < 0.9
    assert stats.drift(noisy) is None


def test_median_interval_is_the_binomial_order_statistics():
    assert stats.median_ci([1.0] * 5) is None  # no 95% interval from 5 values
    xs = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0]
    assert stats.median_ci(xs) == (3.5, 1.0, 6.0)  # n = 6: the extremes, 96.9%
    xs = list(range(1, 17))  # n = 16: P(Binomial(16, 1/2) <= 3) = 0.0106 <= 0.025 < P(<= 4)
    assert stats.median_ci(xs) == (8.5, 4, 13)
    assert stats.half_width((2.0, 1.9, 2.1)) == pytest.approx(0.05)


@pytest.mark.parametrize("shape", ["lognormal", "two states"])
def test_median_interval_covers_the_true_ratio(shape):
    """Synthetic paired ratios of known median: the 95% interval holds it in 95% of trials
    or more (order statistics: 97.9% for 16 rounds), whatever the distribution."""
    rng = np.random.default_rng(0)
    trials, n = 4000, 16
    if shape == "lognormal":
        true = 1.7
        draws = true * np.exp(0.05 * rng.standard_normal((trials, n)))
    else:  # 70% of rounds in one state, 30% in another: the median is in the first
        fast = rng.random((trials, n)) < 0.7
        z = rng.standard_normal((trials, n))
        draws = np.where(fast, 1.5 * np.exp(0.02 * z), 1.9 * np.exp(0.02 * z))
        from statistics import NormalDist
        true = 1.5 * math.exp(0.02 * NormalDist().inv_cdf(0.5 / 0.7))
    cis = [stats.median_ci(list(row)) for row in draws]
    covered = np.mean([low <= true <= high for _, low, high in cis])
    assert 0.95 <= covered <= 0.995, covered


def test_sampling_stops_once_the_interval_is_narrow():
    tight = [2.0 * (1 + 0.01 * math.sin(i)) for i in range(stats.MIN_ROUNDS)]
    assert stats.precise(tight)
    assert not stats.precise(tight[:-1])  # fewer than MIN_ROUNDS
    wide = [2.0 * (1 + 0.3 * math.sin(i)) for i in range(40)]
    assert not stats.precise(wide)


def test_verdict_judges_the_ratio_and_names_every_reason():
    tight = {"torch_eager/jax": [2.0 * (1 + 0.01 * math.sin(i)) for i in range(12)]}
    assert stats.verdict(tight, {"jax": True, "torch_eager": True}, others=0.0) == (True, [])
    assert stats.verdict(tight, {"jax": True}, others=None)[0]  # load unknown
    wide = {"torch_eager/jax": [2.0 * (1 + 0.3 * math.sin(i)) for i in range(12)]}
    ok, reasons = stats.verdict(wide, {"jax": False, "torch_eager": True},
                                others=stats.MAX_OTHER_CORES + 0.5)
    assert not ok and len(reasons) == 3
    assert reasons[0] == ("jax did not settle (its blocks drifted in warm-up and during the "
                          "rounds)")
    assert reasons[1].startswith("torch_eager/jax: interval [") and "wider than +-10%" in reasons[1]
    assert reasons[2] == f"other processes used {stats.MAX_OTHER_CORES + 0.5:.2f} cores"
    ok, reasons = stats.verdict({"torch_eager/jax": [2.0] * 5}, {}, None)
    assert reasons == ["torch_eager/jax: 5 undisturbed round(s), too few for an interval"]


def test_a_ratio_that_changes_state_during_the_case_is_flagged():
    ratios = [2.0 + 0.01 * (i % 3) for i in range(20)] + [1.7 + 0.01 * (i % 3) for i in range(20)]
    ok, reasons = stats.verdict({"torch_eager/jax": ratios}, {}, None)
    assert not ok
    assert any("the ratio changed during the case (2.01 in the first half of the rounds, "
               "1.71 in the second)" in r for r in reasons)
    # the same values shuffled: one wide distribution, no change of state
    shuffled = list(np.random.default_rng(0).permutation(ratios))
    reasons = stats.verdict({"torch_eager/jax": shuffled}, {}, None)[1]
    assert not any("changed during the case" in r for r in reasons)


def test_rounds_with_a_paused_block_are_left_out():
    """A block whose CPU time / wall time fell below 85% of its side's usual ratio ran while
    the process was paused; its round is dropped, and the sides keep their own usual ratio
    (torch's two threads, 2.0; JAX's one, 1.0)."""
    cpu = {"jax": [1.0, 0.99, 0.5, 1.0, 1.0, None], "torch_eager": [2.0, 1.1, 2.0, 1.98, 2.0, 2.0]}
    assert stats.steady_rounds(cpu) == [True, False, False, True, True, True]
    assert stats.paired_ratios([4.0, 9.0, 6.0], [2.0, 3.0, 2.0], [True, False, True]) == [2.0, 3.0]
    with pytest.raises(ValueError, match="paired blocks"):
        stats.paired_ratios([1.0], [1.0, 2.0])


def test_a_case_paused_in_most_rounds_keeps_only_its_undisturbed_ones():
    """The logistic_regression forward under ``steal`` (session 15, rounded): 13 of 17 JAX
    blocks paused (CPU / wall 0.8-0.9 against 1.6); the upper quartile as reference kept them
    all and quoted 0.57x against 0.89x quiet. The usual ratio is read near the top."""
    jax = [0.88, 0.82, 0.83, 0.91, 1.62, 0.84, 0.88, 0.87, 0.87, 0.90, 1.65, 1.56, 1.58, 0.79,
           0.87, 0.86, 0.88]
    torch = [1.48, 1.28, 1.46, 1.49, 1.99, 1.47, 1.48, 1.52, 1.49, 1.47, 1.99, 1.99, 1.96,
             1.69, 1.68, 1.51, 1.50]
    kept = stats.steady_rounds({"jax": jax, "torch_eager": torch})
    assert [i for i, k in enumerate(kept) if k] == [4, 10, 11, 12]
    # the reference: the second-highest up to 20 blocks, then the 90th percentile; one stray
    # high block is not it
    assert stats.usual_cpu_share([1.0, 1.9, 1.0, 0.5]) == 1.0
    assert stats.usual_cpu_share([float(i) for i in range(1, 41)]) == 37.0
    assert stats.usual_cpu_share([1.5]) == 1.5
    with pytest.raises(ValueError, match="no blocks"):
        stats.usual_cpu_share([])


def test_other_cores_is_the_machine_less_this_process():
    assert stats.other_cores(busy_s=3.0, own_s=2.0, wall_s=2.0) == pytest.approx(0.5)
    assert stats.other_cores(busy_s=1.9, own_s=2.0, wall_s=1.0) == 0.0  # clock granularity
    with pytest.raises(ValueError, match="wall time"):
        stats.other_cores(1.0, 1.0, 0.0)


def test_machine_check_reports_the_spread_of_a_fixed_loop():
    steady = timing.MachineCheck([10.0, 10.1, 9.9, 10.05, 9.95, 10.0], 0.025)
    noisy = timing.MachineCheck([10.0, 14.0, 8.0, 12.0, 9.0, 15.0, 11.0, 7.0, 13.0], 0.025)
    assert steady.spread < 0.05 < 0.3 < noisy.spread
    assert noisy.slowest_over_fastest == pytest.approx(15 / 7)
    assert ("9 blocks of 25 ms: spread 36% (IQR / median), slowest / fastest 2.14"
            in noisy.describe())
    check = timing.check_machine(seconds=0.05, block_s=0.005)
    assert len(check.samples_ms) >= 5 and min(check.samples_ms) > 0


class _FakeClock:
    """time.perf_counter and time.process_time for benchmarks.timing, advanced by fake sides:
    a call of ``d`` seconds on ``threads`` threads adds ``d`` of wall time and ``threads * d``
    of CPU time; a pause (the host stopping the process) adds wall time only."""

    def __init__(self):
        self.wall, self.cpu = 0.0, 0.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def run(self, seconds: float, threads: float = 1.0, paused: float = 0.0) -> None:
        self.wall += seconds + paused
        self.cpu += threads * seconds

    def side(self, durations, threads: float = 1.0):
        """A side whose n-th call takes durations(n) seconds."""
        calls = iter(range(10**9))
        return lambda: self.run(durations(next(calls)), threads)


@pytest.fixture
def clock(monkeypatch):
    fake = _FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(
        perf_counter=fake.perf_counter, process_time=fake.process_time))
    monkeypatch.setattr(timing, "_cpu_seconds", lambda: None)
    return fake


def test_measure_stops_once_the_interval_is_narrow(clock):
    """Steady sides after a slow start: warm-up settles past it, and sampling stops after
    MIN_ROUNDS rounds, well inside the budget, with a stable verdict."""
    slow_start = lambda n: 0.02 if n < 6 else 0.005  # noqa: E731
    t = timing.measure({"jax": clock.side(slow_start), "torch_eager": clock.side(lambda n: 0.01)},
                       block_s=0.025, budget_s=2.0)
    assert t.calls_per_block == {"jax": 5, "torch_eager": 3}
    assert t.lead_in_calls == {"jax": 5, "torch_eager": 3}  # 25 ms, one call at least
    assert all(t.settled.values()) and len(t.kept) == stats.MIN_ROUNDS and all(t.kept)
    assert t.ci("torch_eager", "jax") == pytest.approx((2.0, 2.0, 2.0))
    assert t.median("jax") == pytest.approx(0.005)
    assert clock.wall < 2.0 and t.verdict() == (True, [])


def test_rounds_run_forward_then_backward_and_a_block_after_its_own_side_needs_no_lead_in(
        clock):
    """J T | T J | J T | ...: a lead-in only where the side changes (5 of JAX's 8 blocks, 4 of
    torch's), beside 2 calibrating calls and 6 warm-up blocks per side."""
    calls = {"jax": 0, "torch_eager": 0}

    def side(name):
        def run():
            calls[name] += 1
            clock.run(0.005)
        return run

    t = timing.measure({n: side(n) for n in calls}, block_s=0.025, budget_s=2.0)
    assert t.calls_per_block == t.lead_in_calls == {"jax": 5, "torch_eager": 5}
    assert len(t.kept) == stats.MIN_ROUNDS == 8
    assert calls == {"jax": 2 + 6 * 5 + 8 * 5 + 5 * 5, "torch_eager": 2 + 6 * 5 + 8 * 5 + 4 * 5}
    assert timing._ordered(["a", "b", "c"], 1) == ["c", "b", "a"]


def test_measure_spends_the_budget_on_a_noisy_ratio_and_flags_it(clock):
    rng = np.random.default_rng(0)
    noisy = lambda n: 0.004 * math.exp(rng.standard_normal())  # noqa: E731: 100% spread
    t = timing.measure({"jax": clock.side(lambda n: 0.002), "torch_eager": clock.side(noisy)},
                       block_s=0.025, budget_s=3.0)
    # too wide to quote: sampling goes on to WIDE_BUDGET_FACTOR budgets, and at most one
    # round more (~0.11 s)
    assert 3.0 * timing.WIDE_BUDGET_FACTOR <= clock.wall < 3.0 * timing.WIDE_BUDGET_FACTOR + 0.15
    ok, reasons = t.verdict()
    assert not ok and all(r.startswith("torch_eager") for r in reasons)
    assert any(r.startswith("torch_eager/jax: interval") for r in reasons)


def test_a_noisy_side_that_does_not_settle_in_warm_up_is_judged_by_its_rounds(clock):
    """Blocks alternating between +15% and -13% of 4 ms, three blocks at a time (the medians
    of three consecutive blocks differ by 30%: the warm-up never settles) but with no trend:
    judged steady, no "did not settle" among the reasons. A side that keeps slowing down
    through the rounds is flagged."""
    rng = np.random.default_rng(0)
    calls = {"n": 0}

    def jumpy():  # 5 calls a block: 15 calls fast, 15 slow, ...
        calls["n"] += 1
        level = 1.15 if (calls["n"] // 15) % 2 else 0.87
        clock.run(0.004 * level * (1 + 0.002 * rng.standard_normal()))

    t = timing.measure({"jax": jumpy, "torch_eager": clock.side(lambda n: 0.008)},
                       block_s=0.02, budget_s=2.0)
    assert t.warmup_blocks["jax"] > 6  # it kept warming up: never settled
    assert t.settled == {"jax": True, "torch_eager": True}
    assert not any("settle" in r for r in t.verdict()[1])

    slowing = lambda n: 0.004 * 1.01 ** n  # noqa: E731: 1% slower each call
    t = timing.measure({"jax": clock.side(slowing), "torch_eager": clock.side(lambda n: 0.008)},
                       block_s=0.02, budget_s=1.0)
    assert not t.settled["jax"] and t.settled["torch_eager"]
    assert "jax did not settle (its blocks drifted in warm-up and during the rounds)" in (
        t.verdict()[1])


def test_an_interval_too_wide_at_the_budget_samples_on_until_it_can_be_quoted(clock):
    """torch's calls +-50% at random, its blocks (six calls) about +-12%: past the budget
    sampling goes on, and stops once the interval is within +-10%, before WIDE_BUDGET_FACTOR
    budgets."""
    rng = np.random.default_rng(0)
    noisy = lambda n: 0.004 * (1 + 0.5 * rng.uniform(-1, 1))  # noqa: E731
    budget = 1.5
    t = timing.measure({"jax": clock.side(lambda n: 0.002), "torch_eager": clock.side(noisy)},
                       block_s=0.025, budget_s=budget)
    ratios = t.ratios["torch_eager/jax"]
    assert budget < clock.wall < timing.WIDE_BUDGET_FACTOR * budget  # past the budget
    # it stopped because the interval could be quoted, not because it was precise
    assert stats.quotable(ratios) and not stats.precise(ratios)
    assert not stats.quotable(ratios[:-1]) and t.verdict() == (True, [])


@pytest.mark.parametrize("changes", [False, True])
def test_two_visits_pool_their_rounds_and_flag_a_ratio_that_changed_between_them(clock,
                                                                               changes):
    """The first visit stops at half MIN_ROUNDS rounds, the second samples until the pooled
    interval is narrow. A side that runs 30% slower at the second visit (the machine in
    another state minutes later) is flagged; the same speed at both is stable."""
    speed = {"jax": 0.002}
    sampler = timing.Sampler({"jax": lambda: clock.run(speed["jax"]),
                              "torch_eager": clock.side(lambda n: 0.004)},
                             block_s=0.025, budget_s=2.0)
    sampler.visit(last=False)
    assert sampler.visits == [stats.MIN_ROUNDS // 2] and sum(sampler.kept) == 4
    clock.run(60.0)  # the other cases' first visits
    if changes:
        speed["jax"] = 0.0026
    sampler.visit(last=True)
    t = sampler.timing()
    assert len(t.visits) == 2 and sum(t.visits) == len(t.kept) >= stats.MIN_ROUNDS
    assert t.first_visit_kept() == 4 and t.wall_s < 2.0  # the 60 s between are not its own
    ok, reasons = t.verdict()
    if changes:
        assert not ok and ("torch_eager/jax: the ratio changed between the case's two visits "
                           "(2.00 in the first, 1.54 in the second)") in reasons
    else:
        assert (ok, reasons) == (True, []) and t.ci("torch_eager", "jax")[0] == pytest.approx(2)


def test_a_step_slower_than_the_budget_still_gets_its_minimum_rounds(clock):
    t = timing.measure({"jax": clock.side(lambda n: 0.5), "torch_eager": clock.side(lambda n: 0.5)},
                       block_s=0.025, budget_s=0.1)
    assert t.calls_per_block == t.lead_in_calls == {"jax": 1, "torch_eager": 1}
    assert len(t.kept) == stats.MIN_ROUNDS and t.verdict()[0]
    assert clock.wall <= timing.MIN_BUDGET_ROUNDS * 2 * 2 * 0.5


@pytest.mark.parametrize("throughout", [True, False])
def test_other_processes_are_judged_over_the_undisturbed_rounds(clock, monkeypatch, throughout):
    """A competitor that used half a core in every round flags the case (it slows every round
    alike, which the per-round filter cannot see); one that ran only while the host paused
    this process (the rounds left out) does not."""
    state = {"others": 0.0, "paused": False}
    monkeypatch.setattr(timing, "_cpu_seconds", lambda: (clock.cpu + state["others"], clock.cpu))

    def side(seconds):
        def run():
            paused = clock.wall > 0.5 and clock.wall % 0.6 >= 0.45  # phases of 150 ms
            clock.run(seconds, paused=seconds if paused else 0.0)
            if throughout or paused:
                state["others"] += 0.5 * (seconds * (2 if paused else 1))
        return run

    t = timing.measure({"jax": side(0.002), "torch_eager": side(0.004)}, block_s=0.025,
                       budget_s=2.0)
    assert 0 < sum(t.kept) < len(t.kept)
    if throughout:
        assert t.other_cores == pytest.approx(0.5, rel=0.05)
        assert f"other processes used {t.other_cores:.2f} cores" in t.verdict()[1]
    else:
        assert t.other_cores < 0.1 and t.verdict() == (True, [])


def _slowed_after_torch(clock, lead_in_s: float) -> timing.Timing:
    """JAX calls run 45% slow for 10 ms after a torch call ends (torch's OpenMP workers
    spinning on the cores); alone, JAX takes 2 ms a call and torch 4 ms: a speedup of 2."""
    torch_ended = [-1.0]

    def torch_call():
        clock.run(0.004, threads=2)
        torch_ended[0] = clock.wall

    def jax_call():
        clock.run(0.002 * (1.45 if clock.wall - torch_ended[0] < 0.010 else 1.0))

    return timing.measure({"jax": jax_call, "torch_eager": torch_call}, block_s=0.025,
                          budget_s=2.0, lead_in_s=lead_in_s, rounds=16)


def test_the_lead_in_times_each_side_in_its_steady_state(clock):
    """Without a lead-in, every JAX block that follows a torch block starts slow: the JAX
    blocks alternate and the speedup reads low. After a 25 ms lead-in of its own side each
    block runs in its steady state, and the speedup is the one each side reaches alone."""
    plain = _slowed_after_torch(clock, lead_in_s=0.0)
    jax_blocks = plain.blocks["jax"]
    assert min(jax_blocks) == pytest.approx(0.002) and max(jax_blocks) > 0.0022
    assert plain.ci("torch_eager", "jax")[0] < 1.95
    led = _slowed_after_torch(clock, lead_in_s=timing.LEAD_IN_S)
    assert led.blocks["jax"] == pytest.approx([0.002] * 16)
    assert led.ci("torch_eager", "jax") == pytest.approx((2.0, 2.0, 2.0))
    assert led.verdict() == (True, [])


def test_rounds_paused_by_the_host_are_dropped_and_the_ratio_stays_true(clock):
    """The host pauses the process (wall time passes, no CPU time) in random phases shorter
    than a round: the blocks it hit read slow on one side of their round. Their rounds are
    dropped by CPU time / wall time, and the speedup stays 2.0."""
    rng = np.random.default_rng(1)
    phase = {"noisy": False, "until": 0.0}

    def paused(seconds: float) -> float:
        if clock.wall >= phase["until"]:
            phase["noisy"] = not phase["noisy"]
            phase["until"] = clock.wall + rng.uniform(0.02, 0.2)
        return seconds if phase["noisy"] else 0.0  # stopped half the time while noisy

    sides = {"jax": lambda: clock.run(0.002, 1.0, paused(0.002)),
             "torch_eager": lambda: clock.run(0.004, 2.0, paused(0.004))}
    t = timing.measure(sides, block_s=0.025, budget_s=20.0)
    assert 0 < sum(t.kept) < len(t.kept)  # some rounds dropped, some kept
    low, high = t.ci("torch_eager", "jax")[1:]
    assert 1.9 <= low <= high <= 2.1
    every = stats.median_ci(stats.paired_ratios(t.blocks["torch_eager"], t.blocks["jax"]))
    assert every[2] - every[1] > high - low  # all rounds: a wider interval


def _timed(model, mode, speedup, stable, reasons=()):
    return Record(model=model, mode=mode, dtype="float32", batch_size=2, device="cpu",
                          jax_ms=1.0, torch_eager_ms=speedup, speedup=speedup, jax_iqr_ms=0.02,
                          torch_eager_iqr_ms=0.5, stable=stable, unstable_reasons=list(reasons),
                          versions={"jax": "x"}, date="today")


def test_table_marks_unstable_cases_and_the_mean_leaves_them_out():
    records = [_timed("a", "forward", 2.0, True), _timed("b", "forward", 0.5, True),
               _timed("c", "train", 100.0, False, ["jax spread 30% > 10%"])]
    text = report.table(records)
    assert "(100.00x)" in text and "unstable: jax spread 30% > 10%" in text
    assert "over the 2 stable case(s): 1.00x" in text
    assert "left out, unstable or without a verdict: 1 of 3 (c train)" in text
    row = next(line for line in text.splitlines() if line.startswith("b "))
    assert " 2% " in row and " 100% " in row  # each side's IQR / median
    md = report.markdown(records)
    assert "(100.00x)" in md and "1.00x" in md


def test_records_of_earlier_runs_still_read():
    old = dataclasses.asdict(_timed("a", "forward", 2.0, None))
    old["jax_ms_iqr"] = old.pop("jax_iqr_ms")  # the field's name before
    old["min_block_s"] = 0.05  # a field since dropped
    rec = Record.from_json(old)
    assert rec.jax_iqr_ms == 0.02 and rec.stable is None


# ----------------------------------------------------------------------------- registry sizes


def test_every_model_has_quick_sizes_with_the_bench_layers():
    """Quick mode times the bench layers (the slides' shapes) on smaller or larger batches;
    ResNeXt alone keeps one block per stage (its 32-way grouped convolutions compile slowly),
    and the image classifiers that take a CIFAR batch have its 10 classes."""
    cifar = {"resnet18", "resnet_bottleneck", "resnext", "densenet121"}
    for name in flax_arch.list_models():
        entry = flax_arch.get_entry(name)
        quick, bench = entry.quick, entry.bench
        assert quick is not None, f"{name}: no quick size in the registry"
        assert entry.config("quick") is quick
        shrunk = {k: v for k, v in quick.kwargs.items() if bench.kwargs.get(k) != v}
        if name in cifar:
            assert shrunk.pop("num_classes") == 10 and quick.inputs[0].shape[1:] == (3, 32, 32)
        if name == "resnext":
            assert shrunk == {"layers": [1, 1, 1, 1]}
        else:
            kept = set(quick.kwargs) - ({"num_classes"} if name in cifar else set())
            assert shrunk == {} and kept == set(bench.kwargs), name
        assert len(quick.inputs) == len(bench.inputs)
        for q, b in zip(quick.inputs, bench.inputs):  # the same inputs but for batch (and
            assert q.layout == b.layout and q.kind == b.kind and q.high == b.high  # U-Net's
            same = [i for i, axis in enumerate(q.layout) if axis not in "NHW"]  # image size)
            assert [q.shape[i] for i in same] == [b.shape[i] for i in same], name


def test_import_families_names_a_family_that_fails(monkeypatch):
    assert harness.import_families() == []
    real = harness.importlib.import_module

    def failing(module):
        if module == "torch_ref.qrnn":
            raise SyntaxError("half-written")
        return real(module)

    monkeypatch.setattr(harness.importlib, "import_module", failing)
    assert harness.import_families() == [
        "cannot import torch_ref.qrnn: SyntaxError: half-written"]


def test_compare_two_runs():
    first = [_timed("a", "forward", 2.0, True), _timed("b", "train", 1.0, True),
             _timed("c", "forward", 3.0, True)]
    second = [_timed("a", "forward", 2.1, True), _timed("b", "train", 1.2, True),
              _timed("c", "forward", 9.0, False, ["jax spread 30% > 10%"])]
    ok, lines = report.compare(first, first)
    assert ok and lines[-1].endswith("yes")
    ok, lines = report.compare(first, second)
    assert not ok
    assert lines[0] == "2 case(s) stable in both runs; 1 differ by more than 10%: b train +20%"
    assert "second run: 1 of 3 unstable (33%): c forward" in lines
    # agreeing ratios, but a third of the second run unstable: not reproducible either
    ok, lines = report.compare(first, [first[0], first[1], second[2]])
    assert not ok and "0 differ" in lines[0] and lines[-1].endswith("no")


PROFILED = """
import jax, jax.numpy as jnp

def test_compiles_twice():
    jax.jit(lambda x: jnp.sin(x) * 2.71828)(1.0)  # programs no other test compiles
    jax.jit(lambda x: jnp.cos(x) - 1.41421)(1.0)

def test_compiles_nothing():
    import numpy as np
    block = np.ones(256 << 20, np.uint8)  # 256 MiB, touched, then freed: a peak, not a size
    del block
"""


def test_suite_profile_reports_each_files_compilations(pytester, tmp_path):
    """benchmarks.suite_profile, run in-process on a two-test file: its table names the file,
    its two compilations and their seconds; the JSON holds one record per test."""
    pytester.makepyfile(test_profiled=PROFILED)
    out = tmp_path / "profile.json"
    outer = list(suite_profile._ACTIVE)  # a profiled suite's own profile, if any
    result = pytester.runpytest_inprocess("-p", "benchmarks.suite_profile",
                                          "--suite-profile-json", str(out))
    result.assert_outcomes(passed=2)
    records = {r["test"].split("::")[1]: r for r in json.loads(out.read_text())}
    assert set(records) == {"test_compiles_twice", "test_compiles_nothing"}
    assert records["test_compiles_twice"]["programs"] == 2
    assert records["test_compiles_twice"]["compile"] > 0
    assert records["test_compiles_nothing"]["programs"] == 0
    if suite_profile.reset_peak():  # Linux: each test's own peak, the 256 MiB block in it
        nothing = records["test_compiles_nothing"]
        assert nothing["peak"] - nothing["rss"] >= 200 << 20
        assert records["test_compiles_twice"]["peak"] < nothing["peak"] - (200 << 20)
        assert any("largest peaks" in line for line in result.outlines)
    table = result.outlines[result.outlines.index(next(
        line for line in result.outlines if line.startswith("suite profile"))):]
    row = next(line.split() for line in table if line.startswith("test_profiled.py"))
    assert row[1] == "2" and row[-1] == "2"  # two tests, two programs
    assert any(line.startswith("compilation floor:") for line in result.outlines)
    assert suite_profile._ACTIVE == outer  # the in-process run's profile is gone with it


def test_forward_and_train_steps_each_run_the_shared_torch_model_in_their_mode():
    """A case is visited twice (forward, train; then train, forward): the forward step must
    not time the model the train step left in train mode."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    pair = steps.Pair(None, model, (), (torch.randn(8, 4),), loss="mse",
                      torch_target=torch.randn(8, 4))
    device = types.SimpleNamespace(torch_device="cpu")
    forward = steps.torch_forward(pair, device, model)
    train = steps.torch_train(pair, device, steps.WithLoss(model, "mse"),
                              steps.adam(model.parameters())[0])
    forward(), train(), forward(), train()
    assert seen == [False, True, False, True]
