"""The QRNN against torch's LSTM: forward and training step, jit-compiled JAX vs eager PyTorch.

Bradbury et al. 2016 (figure 4) time one QRNN layer against cuDNN's LSTM at hidden size 320,
batch 8 to 64 and sequence 32 to 512. Here: :class:`flax_arch.models.qrnn.QRNNLayer` (kwidth
2; f-pooling by default, whose matrix products are half the LSTM's) jit-compiled with each of
its scan modes (``lax.scan`` and ``lax.associative_scan``; the faster one per size is the
headline, both are recorded) against ``torch.nn.LSTM(320, 320, batch_first=True)`` run
eagerly, on the same input, dtype (float32) and matmul precision (full float32: ``highest`` in
JAX, TF32 off in torch).

* forward: JAX returns ``(hts, h_T)``; torch runs ``lstm(x)`` under ``torch.no_grad()``.
* train: mean-squared error against a fixed target, gradients, one Adam step (lr 1e-3); the
  JAX step is one jitted function with the parameters and optimizer state donated.

Compilation is timed apart (lower + compile). The three runs (QRNN sequential, QRNN
associative, LSTM) are timed by :func:`benchmarks.timing.measure`, as ``python -m
benchmarks`` times its sides: warm-up until settled, then rounds of one block each, every
block after an untimed lead-in of its own run; the speedup of each scan mode is the median
paired ratio LSTM / QRNN with its 95% interval, and the verdict (``stable``) comes from
:mod:`benchmarks.stats`. The FLOP counts are the matrix products' (2 x multiply-adds): the
QRNN's convolution ``2 B L (kwidth I) (k H)`` (k = 2, 3, 4 gates for f, fo, ifo), the LSTM's
``2 B L (4 H) (I + H)`` forward, the training step about three times that; XLA's own count of
the compiled program is recorded beside it.

    python -m benchmarks.qrnn_vs_lstm                    # all sizes, default device
    python -m benchmarks.qrnn_vs_lstm --quick            # a few sizes, short budgets
    python -m benchmarks.qrnn_vs_lstm --batches 8 --seqs 512 --modes forward  # the paper's cell

Writes ``qrnn_vs_lstm_<device-name>.json`` and ``.md`` under ``--out``
(default ``benchmarks/results/`` under the current directory).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from .record import results_dir
from .report import ratio
from .stats import geomean

HIDDEN = INPUT = 320  # the paper's
KWIDTH = 2
BATCHES = (8, 16, 32, 64)
SEQS = (32, 64, 128, 256, 512)
QUICK_BATCHES, QUICK_SEQS = (8, 32), (32, 128)
GATES = {"f": 2, "fo": 3, "ifo": 4}  # convolution outputs per hidden unit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"batches {QUICK_BATCHES} x sequences {QUICK_SEQS}, 2 s per size")
    p.add_argument("--batches", type=lambda s: tuple(map(int, s.split(","))), default=BATCHES)
    p.add_argument("--seqs", type=lambda s: tuple(map(int, s.split(","))), default=SEQS)
    p.add_argument("--modes", type=lambda s: tuple(s.split(",")), default=("forward", "train"))
    p.add_argument("--pooling", choices=tuple(GATES), default="f",
                   help="the QRNN's pooling (default f, the paper's fastest)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="warm-up and timing per size and mode (default 10, --quick 2)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="auto: the GPU when both JAX and torch see one, else the CPU")
    p.add_argument("--single-core", action="store_true",
                   help="pin the process to one CPU core, torch with one thread (default: each "
                        "library's own threads on all cores)")
    p.add_argument("--device-name", default=None,
                   help="names the output files (default: the device, e.g. cpu_amd-epyc-2-cores)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: benchmarks/results under the current directory)")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.seqs = QUICK_BATCHES, QUICK_SEQS
    args.budget = args.budget or (2.0 if args.quick else 10.0)
    args.out = results_dir(args.out)
    if set(args.modes) - {"forward", "train"}:
        p.error(f"--modes: forward and/or train, got {args.modes}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.single_core:  # both libraries size their thread pools by the cores allowed
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    # JAX and torch share the GPU: JAX allocates as it needs instead of 75% up front
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    import torch.nn.functional as F
    from flax import nnx

    import flax_arch.models.qrnn as fq
    from . import flops, stats
    from .device import cpu_name, slug
    from .timing import LEAD_IN_S, measure

    if args.single_core:
        torch.set_num_threads(1)
    on_gpu = args.device == "gpu" or (
        args.device == "auto" and jax.default_backend() == "gpu" and torch.cuda.is_available())
    if on_gpu and not (jax.default_backend() == "gpu" and torch.cuda.is_available()):
        sys.exit("--device gpu: JAX and torch must both see a GPU")
    jax_device = jax.devices("gpu" if on_gpu else "cpu")[0]
    torch_device = torch.device("cuda" if on_gpu else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device_name = args.device_name or (
        slug("gpu", torch.cuda.get_device_name(0)) if on_gpu
        else slug("cpu", f"{cpu_name()} {cores} core{'s' * (cores != 1)}"))

    # the same float32 arithmetic on both sides
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    block_s = 0.1
    meta = {
        "benchmark": f"QRNN ({args.pooling}-pooling, kwidth {KWIDTH}) vs torch.nn.LSTM, "
                     f"hidden {HIDDEN}, input {INPUT}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if on_gpu else cpu_name(),
        "device_name": device_name,
        "jax_device": str(jax_device),
        "torch_device": str(torch_device),
        "dtype": "float32",
        "matmul_precision": {
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "torch_float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch_cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        },
        "versions": {
            "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": __import__("jaxlib").__version__,
            "flax": __import__("flax").__version__, "optax": optax.__version__,
            "torch": torch.__version__, "numpy": np.__version__,
            "cuda (torch)": torch.version.cuda,
        },
        "threads": {
            "os.cpu_count": os.cpu_count(),
            "cores available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "torch intra-op": torch.get_num_threads(),
            "torch inter-op": torch.get_num_interop_threads(),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        },
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"budget_s": args.budget, "block_s": block_s, "lead_in_s": LEAD_IN_S,
                     "pooling": args.pooling, "single_core": args.single_core,
                     "optimizer": "adam 1e-3", "loss": "mse",
                     "timing": "benchmarks.timing.measure: runs alternating block by "
                               "block, each block after a lead-in of its own run; speedup = "
                               "median paired ratio LSTM / QRNN, 95% interval; stable per "
                               "benchmarks.stats"},
    }
    print(f"device: {meta['device']} (JAX {jax_device}, torch {torch_device})")
    print(f"versions: {meta['versions']}")
    print(f"threads: {meta['threads']}")
    print(f"precision: {meta['matmul_precision']}; load average {meta['load_average_start']}")

    # ------------------------------------------------------------------ the models
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True).to(torch_device)
    lstm_opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    tx = optax.adam(1e-3)

    def qrnn_programs(scan: str, x, target) -> dict:
        """Compiled forward and training step for one scan mode, with their state."""
        with jax.default_device(jax_device):
            model = fq.QRNNLayer(INPUT, HIDDEN, KWIDTH, args.pooling, scan=scan,
                                 rngs=nnx.Rngs(0))
            graphdef, params = nnx.split(model)
            opt_state = tx.init(params)

        def forward(params, x):
            return nnx.merge(graphdef, params)(x)  # (hts, h_T)

        def loss_fn(params, x, target):
            hts, _ = nnx.merge(graphdef, params)(x)
            return jnp.mean(jnp.square(hts - target))

        def train_step(params, opt_state, x, target):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, target)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        out = {}
        t0 = time.perf_counter()
        fwd = jax.jit(forward).lower(params, x).compile()
        out["forward"] = dict(fn=fwd, compile_s=time.perf_counter() - t0, flops=flops.xla_flops(fwd))
        t0 = time.perf_counter()
        step = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, x, target)
        step = step.compile()
        out["train"] = dict(fn=step, compile_s=time.perf_counter() - t0, flops=flops.xla_flops(step))
        out["state"] = [params, opt_state]
        return out

    def jax_call(programs, mode, x, target):
        if mode == "forward":
            fn = programs["forward"]["fn"]
            return lambda: jax.block_until_ready(fn(programs["state"][0], x))

        def step():
            state = programs["state"]
            state[0], state[1], loss = programs["train"]["fn"](state[0], state[1], x, target)
            jax.block_until_ready(loss)
        return step

    def torch_call(mode, x, target):
        if mode == "forward":
            def forward():
                with torch.no_grad():
                    lstm(x)
                sync()
            return forward

        def step():
            lstm_opt.zero_grad(set_to_none=True)
            out, _ = lstm(x)
            F.mse_loss(out, target).backward()
            lstm_opt.step()
            sync()
        return step

    # ------------------------------------------------------------------ the sizes
    records = []
    print(f"{'mode':8s} {'batch':>5s} {'seq':>4s} {'QRNN seq ms':>11s} {'QRNN assoc ms':>13s} "
          f"{'LSTM ms':>9s} {'LSTM/QRNN':>9s}  spreads (IQR/median)")
    rng = np.random.default_rng(0)
    for batch in args.batches:
        for seq in args.seqs:
            x_np = rng.standard_normal((batch, seq, INPUT)).astype(np.float32)
            t_np = rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)
            x_j, t_j = jax.device_put(x_np, jax_device), jax.device_put(t_np, jax_device)
            x_t = torch.from_numpy(x_np).to(torch_device)
            t_t = torch.from_numpy(t_np).to(torch_device)
            programs = {scan: qrnn_programs(scan, x_j, t_j) for scan in fq.SCANS}
            for mode in args.modes:
                runs = {f"jax_{scan}": jax_call(programs[scan], mode, x_j, t_j)
                        for scan in fq.SCANS}
                runs["torch"] = torch_call(mode, x_t, t_t)
                timing = measure(runs, block_s=block_s, budget_s=args.budget,
                                 pairs=[("torch", f"jax_{scan}") for scan in fq.SCANS])
                ms = {k: 1e3 * timing.median(k) for k in runs}
                spread = {k: stats.relative_spread(timing.kept_blocks(k)) for k in runs}
                cis = {scan: timing.ci("torch", f"jax_{scan}") for scan in fq.SCANS}
                best = min(fq.SCANS, key=lambda s: ms[f"jax_{s}"])
                ci = cis[best]  # the headline: LSTM against the faster scan mode
                key = f"torch/jax_{best}"
                stable, reasons = stats.verdict({key: timing.ratios[key]}, timing.settled,
                                                timing.other_cores)
                macs = batch * seq * KWIDTH * INPUT * GATES[args.pooling] * HIDDEN
                lstm_macs = batch * seq * 4 * HIDDEN * (INPUT + HIDDEN)
                factor = 2 if mode == "forward" else 6  # forward; forward + 2x backward
                rec = {
                    "model": f"qrnn_{args.pooling}_k{KWIDTH}_vs_lstm", "mode": mode,
                    "device": meta["device"], "device_name": device_name, "dtype": "float32",
                    "batch_size": batch, "seq_len": seq, "hidden_size": HIDDEN,
                    "input_size": INPUT, "pooling": args.pooling,
                    "jax_sequential_ms": ms["jax_sequential"],
                    "jax_associative_ms": ms["jax_associative"],
                    "jax_ms": ms[f"jax_{best}"], "jax_scan": best,
                    "torch_eager_ms": ms["torch"], "torch_compile_ms": None,
                    "speedup": ci[0] if ci else ms["torch"] / ms[f"jax_{best}"],
                    "speedup_ci": [ci[1], ci[2]] if ci else None,
                    "spread": spread, "stable": stable, "unstable_reasons": reasons,
                    "other_cores": timing.other_cores,
                    "jax_compile_s": {s: programs[s][mode]["compile_s"] for s in fq.SCANS},
                    "flops": factor * macs, "lstm_flops": factor * lstm_macs,
                    "xla_flops": {s: programs[s][mode]["flops"] for s in fq.SCANS},
                    "samples_ms": {k: [1e3 * t for t in v] for k, v in timing.blocks.items()},
                    "kept": timing.kept, "calls_per_block": timing.calls_per_block,
                    "lead_in_calls": timing.lead_in_calls,
                    "speedup_by_scan": {s: c and c[0] for s, c in cis.items()},
                    "speedup_ci_by_scan": {s: c and [c[1], c[2]] for s, c in cis.items()},
                }
                records.append(rec)
                meta["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
                _write({"meta": meta, "records": records}, args.out, device_name)  # so far
                print(f"{mode:8s} {batch:5d} {seq:4d} {ms['jax_sequential']:11.2f} "
                      f"{ms['jax_associative']:13.2f} {ms['torch']:9.2f} "
                      f"{ratio(rec['speedup'], stable, rec['speedup_ci']):>22s}  "
                      + " ".join(f"{k} {_pct(v)}" for k, v in spread.items())
                      + ("" if stable else f"  unstable: {'; '.join(reasons)}"), flush=True)
    print(f"wrote {args.out / f'qrnn_vs_lstm_{device_name}'}.json and .md")
    return {"meta": meta, "records": records}


def _pct(spread: float | None) -> str:
    return "-" if spread is None else f"{spread:.0%}"


def _markdown(result: dict) -> str:
    meta, records = result["meta"], result["records"]
    settings = meta["settings"]
    lines = [
        f"# QRNN vs LSTM on {meta['device']} ({meta['device_name']})",
        "",
        f"{meta['benchmark']}; {meta['dtype']}, matmul precision {meta['matmul_precision']}.",
        f"JAX {meta['jax_device']} (jit, compile timed apart) vs torch {meta['torch_device']} "
        f"(eager); {settings['timing']}; blocks of at least {settings['block_s']} s after "
        f"lead-ins of {settings['lead_in_s']} s, "
        f"{settings['budget_s']} s per size and mode. Date {meta['date']}.",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.",
        f"Threads: {', '.join(f'{k} {v}' for k, v in meta['threads'].items())}"
        + (" (pinned to one core with --single-core)." if settings["single_core"] else "."),
        f"Load average (1, 5, 15 min) at start {meta['load_average_start']}, at end "
        f"{meta['load_average_end']}.",
        "",
        "Speedup = the median paired ratio LSTM block / QRNN block (the faster scan mode) "
        "over the undisturbed rounds, with its 95% interval; in parentheses where the "
        "interval is wider than +-10%, a run did not settle or the machine was shared (the "
        "note says why); ± is IQR / median of each run's blocks (QRNN scan, QRNN "
        "associative, LSTM).",
        "",
        "| mode | batch | seq | QRNN lax.scan (ms) | QRNN associative_scan (ms) | LSTM (ms) "
        "| speedup | ± | QRNN GFLOP/s | LSTM GFLOP/s | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        spread = "/".join(_pct(v) for v in r["spread"].values())
        lines.append(
            f"| {r['mode']} | {r['batch_size']} | {r['seq_len']} | {r['jax_sequential_ms']:.2f} "
            f"| {r['jax_associative_ms']:.2f} | {r['torch_eager_ms']:.2f} | "
            f"**{ratio(r['speedup'], r['stable'], r.get('speedup_ci'))}** | {spread} | "
            f"{r['flops'] / r['jax_ms'] / 1e6:.0f} | "
            f"{r['lstm_flops'] / r['torch_eager_ms'] / 1e6:.0f} | "
            f"{'; '.join(r['unstable_reasons'])} |")
    lines.append("")
    for mode in ("forward", "train"):
        s = [r["speedup"] for r in records if r["mode"] == mode and r["stable"]]
        n = sum(r["mode"] == mode for r in records)
        if n:
            wins = {scan: sum(r["jax_scan"] == scan for r in records if r["mode"] == mode)
                    for scan in ("sequential", "associative")}
            summary = (f"geometric mean {geomean(s):.2f}x, min {min(s):.2f}x, max "
                       f"{max(s):.2f}x over the {len(s)} stable of {n} sizes" if s
                       else f"no stable size of {n}")
            lines.append(f"- {mode}: speedup {summary}; faster scan mode: {wins}.")
    return "\n".join(lines) + "\n"


def _write(result: dict, out: Path, device_name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"qrnn_vs_lstm_{device_name}"
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    Path(f"{stem}.md").write_text(_markdown(result))


if __name__ == "__main__":
    from . import configure_process

    configure_process()  # as python -m benchmarks: before JAX starts
    main()
