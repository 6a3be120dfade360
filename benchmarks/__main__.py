"""``python -m benchmarks``: every registered model under jit-compiled XLA against eager PyTorch.

Examples::

    python -m benchmarks                          # all models, forward and train, float32
    python -m benchmarks --quick                  # the quick sizes: under 5 minutes on 2 cores
    python -m benchmarks --quick --save           # ... as this device's latest quick run
    python -m benchmarks --models mlp,resnet18 --batch-size 1,64 --torch-compile
    python -m benchmarks --dtype float32,bfloat16 --json out.json --plot out.png
    python -m benchmarks --list
    python -m benchmarks --compare run1.json run2.json   # do two runs agree?
    python -m benchmarks --port torchvision.models:mobilenet_v2 --input 1,3,224,224

Every speedup is the median of paired per-round ratios with its 95% interval; a case whose
interval is wider than +-10%, whose ratio changed during the case, whose sides drifted,
or that shared the machine with other work is marked unstable, and the geometric means leave
it out (:mod:`benchmarks.stats`, :mod:`benchmarks.timing`). A model that fails is reported as failed, and the run goes on;
unknown names, impossible batch sizes and dtypes the device lacks are named and skipped. The
exit status is non-zero only for usage errors (nothing valid left to run, malformed
arguments).

Run as a program, it first adds :func:`flax_arch.configure_xla_cpu`'s flags to ``XLA_FLAGS``
and makes :func:`flax_arch.configure_cpu_memory`'s settings (freed memory reused, JAX's CPU
calls on the calling thread), before JAX starts; the records carry both.
"""

from __future__ import annotations

import os

# Both libraries share one GPU: JAX must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import gc  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

USAGE_ERROR = 2


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .device import DTYPES, PRECISIONS
    from .harness import MODES

    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time every registered model, forward and training step, under "
                    "jit-compiled JAX/XLA against eager PyTorch (and torch.compile).")
    p.add_argument("--models", nargs="+", default=["all"], metavar="NAME",
                   help="model names (comma- or space-separated) or 'all' (default)")
    p.add_argument("--modes", type=_csv, default=list(MODES),
                   help="comma-separated, from: forward,train (default both)")
    p.add_argument("--batch-size", type=_csv, default=None, metavar="N[,N...]",
                   help="batch sizes to time (default: the registry's size per model)")
    p.add_argument("--dtype", type=_csv, default=["float32"], metavar="DTYPE[,DTYPE]",
                   help=f"from: {','.join(DTYPES)} (default float32)")
    p.add_argument("--precision", choices=PRECISIONS, default="highest",
                   help="float32 matmul precision on both sides (GPU): highest = true "
                        "float32, tf32 = TF32 tensor cores (default highest)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="warm-up and timing budget per model and mode, compilation apart "
                        "(default 60, --quick 2); sampling stops earlier once the speedup's "
                        "interval is within +-5%%, goes on to twice the budget while it is "
                        "wider than +-10%%, and a case whose interval is then still wider "
                        "is marked unstable")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new model after this many seconds; the rest are reported "
                        "as skipped")
    p.add_argument("--lowering", choices=("platform", "rewrite", "xla"), default="platform",
                   help="the backend forms of flax_arch.nn.lowering to trace: the platform's "
                        "(default: the measured rewrites on CPU, XLA's own ops elsewhere), "
                        "or one form everywhere")
    p.add_argument("--torch-compile", action="store_true",
                   help="also time torch.compile (its compilation timed apart)")
    p.add_argument("--quick", action="store_true",
                   help="the registry's quick sizes (a millisecond or more per call, the "
                        "slides' layers), 25 ms blocks, a 2 s budget per case")
    p.add_argument("--cores", type=int, default=None, metavar="N",
                   help="pin both libraries to N of the cores this process may use (default: "
                        "all). On a busy shared machine, --cores 1 avoids the stalls of thread "
                        "pools waiting for descheduled threads")
    p.add_argument("--one-process", action="store_true",
                   help="time every case in this process, one after another, instead of each "
                        "mode of each model in a process of its own (benchmarks/isolate.py): "
                        "a step then runs in the heap the earlier cases left, and its ratio "
                        "can depend on them")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="the device's peak GFLOP/s for the roofline (default: derived, see "
                        "benchmarks/device.py)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart of the speedups")
    p.add_argument("--save", nargs="?", const="", default=None, metavar="DIR",
                   help="write the table, JSON and chart as this device's latest run: "
                        "DIR/<device>[_quick][_<dtype>][_torch-compile][_<lowering>-forms]"
                        ".{md,json,png}, replacing the previous one (default DIR: "
                        "benchmarks/results under the current directory)")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    p.add_argument("--port", metavar="package.module:callable",
                   help="instead of the registry: a torch model named by import path, ported "
                        "by flax_arch.port and timed against itself (forward)")
    p.add_argument("--input", default="1,3,224,224", metavar="N,C,...",
                   help="--port: the input's torch shape (default 1,3,224,224)")
    p.add_argument("--report", nargs="+", metavar="JSON",
                   help="run nothing: print (and write with --json/--markdown/--plot) the "
                        "records of earlier runs' JSON files, merged in order")
    p.add_argument("--compare", nargs=2, metavar=("FIRST", "SECOND"),
                   help="run nothing: whether two runs' JSON records reproduce (stable speedups "
                        "within 10%%, at most 10%% of cases unstable in each)")
    args = p.parse_args(argv)

    args.models = [m for item in args.models for m in _csv(item)]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: unknown {bad}; choose from {','.join(MODES)}")
    bad = [d for d in args.dtype if d not in DTYPES]
    if bad or not args.dtype:
        p.error(f"--dtype: unknown {bad}; choose from {','.join(DTYPES)}")
    if args.batch_size is not None:
        try:
            args.batch_size = [int(b) for b in args.batch_size]
        except ValueError:
            p.error(f"--batch-size: integers expected, got {','.join(args.batch_size)}")
    for name in ("budget", "time_limit", "peak_gflops", "cores"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def _list_models() -> str:
    import flax_arch
    import torch_ref

    twins = set(torch_ref.list_models())
    lines = []
    for name in flax_arch.list_models():
        e = flax_arch.get_entry(name)
        shapes = {size: " ".join(f"{i.layout}{list(i.shape)}" for i in e.config(size).inputs)
                  for size in ("bench", "quick")}
        twin = "" if name in twins else "  (no torch twin registered)"
        lines.append(f"{name:22s} {e.family:12s} {e.loss:16s} bench inputs {shapes['bench']}  "
                     f"{e.bench.kwargs}; quick inputs {shapes['quick']}{twin}")
    return "\n".join(lines)


def _load_records(paths: list[str]):
    """The records of earlier runs, merged; None with a message when a file is unusable."""
    import json

    from .record import Record

    records = []
    for path in paths:
        try:
            with open(path) as f:
                records += [Record.from_json(r) for r in json.load(f)]
        except (OSError, ValueError, TypeError) as err:
            print(f"--report: cannot read records from {path}: {err}", file=sys.stderr)
            return None
    return records


def _write(records, args, note) -> None:
    from . import report

    print(report.table(records))
    if not records:
        return
    if args.json:
        report.write_json(records, args.json)
        note(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown(records))
        note(f"wrote {args.markdown}")
    if args.plot:
        report.plot(records, args.plot)
        note(f"wrote {args.plot}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        from . import report

        runs = [_load_records([path]) for path in args.compare]
        if None in runs:
            return USAGE_ERROR
        print("\n".join(report.compare(*runs)[1]))
        return 0
    if args.report:
        records = _load_records(args.report)
        if records is None:
            return USAGE_ERROR
        _write(records, args, lambda message: print(message, file=sys.stderr))
        return 0

    if args.cores is not None:  # before JAX starts its CPU client, which sizes its pool
        if not hasattr(os, "sched_setaffinity"):
            print("--cores: this platform cannot pin a process to cores", file=sys.stderr)
            return USAGE_ERROR
        allowed = sorted(os.sched_getaffinity(0))
        if args.cores > len(allowed):
            print(f"--cores {args.cores}: only {len(allowed)} core(s) available",
                  file=sys.stderr)
            return USAGE_ERROR
        os.sched_setaffinity(0, allowed[:args.cores])

    from tqdm import tqdm

    import flax_arch
    from . import harness, isolate, timing
    from .device import detect
    from .record import Options, results_dir

    def note(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    for problem in harness.import_families():
        note(problem)
    if args.list:
        print(_list_models())
        return 0

    known = flax_arch.list_models()
    models = known if args.models == ["all"] else list(dict.fromkeys(args.models))
    unknown = [m for m in models if m not in known]
    if unknown:
        note(f"unknown model(s) skipped: {', '.join(unknown)}; registered: {', '.join(known)}")
    models = [m for m in models if m in known]

    batch_sizes: list[int | None] = [None]
    if args.batch_size is not None:
        bad = [b for b in args.batch_size if b < 1]
        if bad:
            note(f"impossible batch size(s) skipped: {bad} (a batch holds at least 1 example)")
        batch_sizes = [b for b in dict.fromkeys(args.batch_size) if b >= 1]

    # each case in a child process (benchmarks/isolate.py): then JAX's backends and torch's
    # threads must not start in this one, and the device is detected in a child too; a
    # program that started JAX before calling main() runs every case in its own process
    isolated = (isolate.available() and not isolate.backends_started() and not args.port
                and not args.one_process)
    device = isolate.run(detect) if isolated else detect()
    dtypes = []
    for dtype in dict.fromkeys(args.dtype):
        ok, why = device.supports(dtype)
        if ok:
            dtypes.append(dtype)
        else:
            note(f"{dtype} skipped: {why}")

    torch_compile = args.torch_compile
    if torch_compile:
        import torch

        if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
            note("torch.compile is unavailable here (torch._dynamo.is_dynamo_supported() is "
                 "False); timing eager PyTorch only")
            torch_compile = False

    if not models or not batch_sizes or not dtypes:
        missing = [w for w, v in (("model", models), ("batch size", batch_sizes),
                                  ("dtype", dtypes)) if not v]
        note(f"nothing to run: no valid {' or '.join(missing)}")
        return USAGE_ERROR

    quick = args.quick
    opts = Options(
        size="quick" if quick else "bench",
        block_s=0.025 if quick else 0.1,
        budget_s=args.budget or (2.0 if quick else 60.0),
        torch_compile=torch_compile,
        precision=args.precision,
        lowering=args.lowering,
        peak_gflops=args.peak_gflops,
    )
    if args.port:
        try:
            records = _port(args, opts, device, dtypes, note)
        except ValueError as err:  # a bad import path or shape, an op the port refuses
            note(f"--port: {err}")
            return USAGE_ERROR
        _write(records, args, note)
        return 0
    if args.save is not None:
        stem = results_dir(args.save or None) / "_".join([device.slug] + ["quick"] * quick
                                  + [d for d in dtypes if d != "float32"]
                                  + ["torch-compile"] * torch_compile
                                  + [f"{args.lowering}-forms"] * (args.lowering != "platform"))
        stem.parent.mkdir(parents=True, exist_ok=True)
        args.json, args.markdown, args.plot = (f"{stem}.{ext}" for ext in ("json", "md", "png"))
    todo = harness.cases(models, dtypes, batch_sizes)
    note(f"{device.name}: {len(todo)} case(s) x {len(args.modes)} mode(s), "
         f"{opts.size} sizes; torch threads {device.threads_torch}, XLA threads "
         f"{device.threads_xla}; 1-min load average {os.getloadavg()[0]:.2f}")
    if device.platform == "cpu" and os.getloadavg()[0] > os.cpu_count():
        note(f"warning: the load average exceeds the machine's {os.cpu_count()} cores: other "
             "processes compete for them, and the timings will not be reliable")
    if device.platform == "cpu":  # before the run; each case times the same loop beside it
        machine = timing.check_machine(seconds=1.0 if quick else 3.0, block_s=opts.block_s)
        note(f"machine check: {machine.describe()}")
        if machine.spread > 0.10:
            note("warning: this machine's own speed varies more than 10% from block to block: "
                 "expect wide intervals and more cases flagged (a shared virtual machine's "
                 "cores slow down and speed up with their neighbours' load)")
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # under `timeout`: keep the results
    try:
        records, interrupted = _run(todo, args, opts, device, note, start, isolated)
    finally:
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.perf_counter() - start

    _write(records, args, note)
    print(f"wall time: {elapsed:.1f} s")
    return 130 if interrupted else 0


def _port(args, opts, device, dtypes, note):
    """--port: the torch model, in each dtype on the device, against its port (the same
    weights, a random input of --input's shape, channels-last for JAX)."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    from . import harness, steps
    from flax_arch.port import build_torch_module, port

    if "train" in args.modes:
        note("--port times the forward call only (a training step needs a loss and a target)")
    shape = tuple(int(n) for n in args.input.split(","))
    x = np.random.default_rng(opts.seed + 1).standard_normal(shape).astype(np.float32)
    records = []
    for dtype in dtypes:
        torch.manual_seed(opts.seed)
        module = build_torch_module(args.port).eval().to(getattr(torch, dtype))
        t_in = torch.from_numpy(x).to(device=device.torch_device, dtype=getattr(torch, dtype))
        ported = port(module, t_in.cpu())
        pair = steps.Pair(ported, module.to(device.torch_device),
                            (jnp.asarray(np.moveaxis(x, 1, -1) if x.ndim >= 3 else x, dtype),),
                            (t_in,), batch_size=shape[0])
        records += harness.run_pair(pair, ["forward"], opts, device, model=args.port,
                                    dtype=dtype, family="port", note=note)
    return records


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _call(fn, *args):
    return fn(*args)


def _case(case, mode, opts, note):
    """One mode of one case as :func:`_run` runs it, in its own process: the device's
    settings made there (torch's thread count, JAX's default device), then the mode."""
    from . import harness
    from .device import detect

    return harness.run_case(case, [mode], opts, detect(), note)


def _run(todo, args, opts, device, note, start, isolated=True):
    """Every mode of every case in turn under a progress bar, each in a process of its own
    forked from this one (:mod:`benchmarks.isolate`; ``isolated=False``: all in this one);
    returns the records and whether interrupted.

    Why a process each: a step timed after other work in the same process runs in the heap
    that work left, and its ratio depended on it (session 16, quick sizes, 2-core Intel Xeon):
    ``rnn`` train, torch 30.5 ms / JAX 33.0 in a process of its own, 50.7 / 37.5 as the 58th
    case of a full run; ``densenet121`` forward, torch 23.0 ms (1.96x) alone, 27.3 (the two
    visits 1.87x and 2.16x) with the training step's first visit between its two. So a
    record times what a process that does this one thing sees: an inference process, a
    training process. (Session 14 tried every case first and then every case again, minutes
    apart, with every case's models and programs held: torch's eager steps ran a median 11%
    slower in the second pass, XLA's 2%, and 29 of 64 ratios "changed between the visits".)"""
    from dataclasses import replace

    from tqdm import tqdm

    from . import harness, isolate, report, steps

    steps.preload()
    # the libraries' own objects (some 440,000) out of every later collection: each case
    # collects before it is timed and after each mode, 0.3-0.4 s a collection otherwise;
    # frozen before the forks, the children share their pages with this process
    gc.collect()
    gc.freeze()
    records = []
    work = [(case, mode) for case in todo for mode in args.modes]
    with tqdm(work, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        for case, mode in bar:
            bar.set_postfix_str(f"{case.model} {mode} {case.dtype} "
                                f"b={case.batch_size or 'default'}")
            if args.time_limit is not None and time.perf_counter() - start > args.time_limit:
                records += harness.skipped(case, [mode], opts, device,
                                           f"skipped: --time-limit {args.time_limit:g} s reached")
                continue
            try:
                done = (isolate.run if isolated else _call)(_case, case, mode, opts, note)
                records += [replace(r, process="own" if isolated else "shared") for r in done]
            except KeyboardInterrupt:
                note("interrupted: the results so far follow")
                return records, True
            except isolate.CaseProcessDied as err:
                note(f"{case.model} {mode}: {err}")
                records += [replace(r, skipped=None, error=str(err)) for r in harness.skipped(
                    case, [mode], opts, device, "")]
            if args.json:
                report.write_json(records, args.json)
    return records, False


if __name__ == "__main__":
    from . import configure_process

    configure_process()  # before JAX starts its CPU client, which reads both settings once
    sys.exit(main())
