"""The two-steady-states lead: does one side switch between two speeds within a process?

Times one side of one registered model alone (no other side in between), block after block
for ``--seconds``, with an idle pause of ``--idle`` seconds every ``--every`` seconds, and
records per block what could explain a change of speed:

* the block's wall time per call and its process CPU time / wall time (how many threads ran);
* how the CPU time split over the process's threads (``/proc/self/task/*/stat``): which
  threads worked, and on which core each last ran;
* the clock the kernel reports for each core (``/proc/cpuinfo``'s ``cpu MHz``; a virtual
  machine may report a fixed one).

It prints the blocks grouped into runs of one speed (a block more than 15% from the previous
run's median starts a new one), so that a second state, and what changed with it, shows. ::

    python -m benchmarks.states --model mlp --side jax --seconds 20
    python -m benchmarks.states --model mlp --side torch_eager --json states.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from .record import Case, Options


def _threads() -> dict[int, tuple[float, int]]:
    """Per thread id: (CPU seconds so far, the core it last ran on)."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state is field 3, utime 14, stime 15, processor 39 (1-based)
        out[int(tid)] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[36]))
    return out


def _mhz() -> list[float]:
    try:
        with open("/proc/cpuinfo") as f:
            return [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    except OSError:
        return []


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.states",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mlp")
    p.add_argument("--mode", default="forward", choices=("forward", "train"))
    p.add_argument("--side", default="jax", choices=("jax", "torch_eager"))
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--block-ms", type=float, default=25.0)
    p.add_argument("--idle", type=float, default=0.5, help="idle pause length (s)")
    p.add_argument("--every", type=float, default=4.0, help="seconds between idle pauses")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)

    from . import steps
    from .device import detect

    device = detect()
    pair = steps.build_pair(Case(args.model, "float32", None), Options(size="quick"), device)
    if args.mode == "forward":
        run = (steps.jax_forward(pair, 0).run if args.side == "jax"
               else steps.torch_forward(pair, device, pair.torch_model))
    else:
        opt, _ = steps.adam(pair.torch_model.parameters())
        run = (steps.jax_train(pair, 0).run if args.side == "jax" else steps.torch_train(
            pair, device, steps.WithLoss(pair.torch_model, pair.loss), opt))
    for _ in range(3):
        run()
    t = time.perf_counter()
    run()
    calls = max(1, round(args.block_ms / 1e3 / (time.perf_counter() - t)))
    blocks, start, next_idle = [], time.perf_counter(), time.perf_counter() + args.every
    while time.perf_counter() - start < args.seconds:
        idle_before = 0.0
        if time.perf_counter() >= next_idle:
            time.sleep(args.idle)
            idle_before, next_idle = args.idle, time.perf_counter() + args.every
        th0, w0, c0 = _threads(), time.perf_counter(), time.process_time()
        for _ in range(calls):
            run()
        w1, c1, th1 = time.perf_counter(), time.process_time(), _threads()
        busy = {tid: (th1[tid][0] - th0.get(tid, (0.0, 0))[0], th1[tid][1]) for tid in th1}
        blocks.append({
            "t": w0 - start, "ms": 1e3 * (w1 - w0) / calls, "cpu_per_wall": (c1 - c0) / (w1 - w0),
            "idle_before": idle_before, "mhz": _mhz(),
            "threads": {tid: [round(s, 3), cpu] for tid, (s, cpu) in busy.items() if s > 0},
        })
    runs, current = [], [blocks[0]]
    for b in blocks[1:]:
        if abs(b["ms"] / statistics.median(x["ms"] for x in current) - 1) > 0.15:
            runs.append(current)
            current = []
        current.append(b)
    runs.append(current)
    print(f"{device.name}: {args.model} {args.mode}, {args.side} alone, {calls} calls per "
          f"block, {len(blocks)} blocks, idle {args.idle:g} s every {args.every:g} s")
    for r in runs:
        ms = statistics.median(b["ms"] for b in r)
        cpu = statistics.median(b["cpu_per_wall"] for b in r)
        cores = sorted({c for b in r for _, c in b["threads"].values()})
        working = statistics.median(len(b["threads"]) for b in r)
        print(f"  t={r[0]['t']:6.2f}-{r[-1]['t'] + args.block_ms / 1e3:6.2f} s: {len(r):3d} "
              f"blocks at {ms:.3f} ms/call, CPU/wall {cpu:.2f}, {working:g} threads working, "
              f"on cores {cores}; idle before its first block: {r[0]['idle_before']:g} s; "
              f"MHz {r[0]['mhz']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.name, "args": vars(args), "blocks": blocks}, f, indent=1)
    return blocks


if __name__ == "__main__":
    from . import configure_process

    configure_process()  # as python -m benchmarks: before JAX starts
    main()
