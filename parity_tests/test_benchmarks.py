"""The benchmark harness works: CLI parsing, bad input, records, FLOP counts, peaks, a tiny run.

Timing numbers are not asserted (they depend on the machine and its load); what is checked is
that every requested case yields a record with the fields DESIGN.md names, that failures are
reported rather than dropped, and that usage errors, and only they, exit non-zero.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import flax_arch
import torch_ref
from benchmarks import flops, harness, report
from benchmarks.__main__ import USAGE_ERROR, main, parse_args
from benchmarks.device import DeviceInfo
from flax_arch import nn, registry

REQUIRED = ("model", "mode", "device", "dtype", "batch_size", "jax_ms", "torch_eager_ms",
            "torch_compile_ms", "speedup", "jax_compile_s", "flops", "precision", "threads",
            "versions", "date", "roofline", "peak_gflops", "error")


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
                                  ["--batch-size", "two"], ["--repeats", "0"],
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


def test_quick_run_writes_records_table_and_chart(tmp_path, capsys):
    """Bad names and sizes are skipped with a message; every valid case gets a full record."""
    out = tmp_path / "bench.json"
    png, md = tmp_path / "bench.png", tmp_path / "bench.md"
    code = main(["--quick", "--models", "linear_regression,mlp,no_such_model", "--batch-size",
                 "0,3", "--repeats", "1", "--json", str(out), "--plot", str(png),
                 "--markdown", str(md)])
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
        assert math.isclose(r["speedup"], r["torch_eager_ms"] / r["jax_ms"])
        assert r["torch_compile_ms"] is None  # not asked for
        assert r["flops"] > 0 and r["flops_source"] == "XLA cost analysis"
        assert math.isclose(r["roofline"], r["flops"] / r["jax_ms"] / 1e6 / r["peak_gflops"])
        assert r["threads"]["torch"] >= 1 and r["threads"]["xla"] >= 1
        assert r["versions"]["jax"] == jax.__version__ and r["versions"]["torch"]
    train = next(r for r in records if r["model"] == "mlp" and r["mode"] == "train")
    forward = next(r for r in records if r["model"] == "mlp" and r["mode"] == "forward")
    assert train["flops"] > 2 * forward["flops"]  # backward and the Adam update
    assert train["optimizer"].startswith("Adam(")
    for text in (captured.out, md.read_text()):
        assert "speedup" in text and "versions: jax" in text and "threads: torch" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    merged = tmp_path / "merged.json"  # --report re-renders (and merges) saved records
    assert main(["--report", str(out), str(out), "--json", str(merged)]) == 0
    assert json.loads(merged.read_text()) == records + records
    assert "mlp" in capsys.readouterr().out
    assert main(["--report", str(tmp_path / "missing.json")]) == USAGE_ERROR


class _Broken(nn.Linear):
    def __call__(self, x):
        raise ValueError("deliberately broken")


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
                 "--repeats", "1", "--json", str(out)]) == 0
    records = {r["model"]: r for r in json.loads(out.read_text())}
    assert "deliberately broken" in records["broken"]["error"]
    assert records["broken"]["jax_ms"] is None
    assert records["linear_regression"]["error"] is None
    assert "FAILED: ValueError: deliberately broken" in capsys.readouterr().out


def test_torch_compile_failure_keeps_the_rest(monkeypatch, tmp_path):
    def no_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", no_compile)
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "linear_regression", "--modes", "forward",
                 "--repeats", "1", "--torch-compile", "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert "no C++ compiler here" in r["torch_compile_error"]
    assert r["torch_compile_ms"] is None and r["jax_ms"] > 0 and r["error"] is None


def test_a_dtype_the_device_lacks_is_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(DeviceInfo, "supports",
                        lambda self, dtype: (dtype == "float32", "no bfloat16 on this device"))
    assert main(["--quick", "--models", "linear_regression", "--dtype", "bfloat16"]) == \
        USAGE_ERROR
    assert "bfloat16 skipped: no bfloat16 on this device" in capsys.readouterr().err
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "linear_regression", "--modes", "forward", "--dtype",
                 "bfloat16,float32", "--repeats", "1", "--json", str(out)]) == 0
    assert [r["dtype"] for r in json.loads(out.read_text())] == ["float32"]


def test_time_limit_reports_the_rest_as_skipped(tmp_path):
    out = tmp_path / "b.json"
    assert main(["--quick", "--models", "mlp,linear_regression", "--time-limit", "1e-6",
                 "--json", str(out)]) == 0
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
    built = harness._Built(harness.Case(name, "float32", None), harness.Options(size="test"),
                           device)
    jax_out = harness._jax_forward(built, 0).run()
    torch_out = harness._torch_forward(built, device, built.torch_model)()
    np.testing.assert_allclose(
        jax_out, flax_arch.to_channels_last(torch_out.numpy(), built.entry.outputs[0]),
        rtol=1e-5, atol=1e-5)
    opt, _ = harness._adam(built.torch_model.parameters())
    jax_step = harness._jax_train(built, 0)
    torch_step = harness._torch_train(
        built, device, harness._WithLoss(built.torch_model, built.entry.loss), opt)
    losses = [(float(jax_step.run()), torch_step().item()) for _ in range(4)]
    np.testing.assert_allclose(*zip(*losses), rtol=1e-4)
    assert losses[-1][0] < losses[0][0]  # the updates are applied


def test_bfloat16_casts_both_sides():
    device = DeviceInfo("cpu", "test cpu", "cpu", 1, 1)
    built = harness._Built(harness.Case("mlp", "bfloat16", 2), harness.Options(size="test"),
                           device)
    assert all(p.dtype == torch.bfloat16 for p in built.torch_model.parameters())
    params = jax.tree.leaves(nnx.state(built.flax_model))
    assert all(p.dtype == jnp.bfloat16 for p in params if jnp.issubdtype(p.dtype, jnp.floating))
    assert built.torch_in[0].dtype == torch.bfloat16 and built.flax_in[0].dtype == jnp.bfloat16
    assert built.flax_in[0].shape == (2, 16)


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
    assert report.geomean([1.0, 4.0, None]) == pytest.approx(2.0)
    rec = harness.Record(model="m", mode="train", dtype="float32", batch_size=2, device="cpu",
                         error="ValueError: nope", versions={"jax": "x"}, date="today")
    assert "FAILED: ValueError: nope" in report.table([rec])
