"""The lead-in experiment: why every timed block follows an untimed lead-in of its own side.

For a few registered models, the same pair timed four ways on this machine:

* interleaved block by block with no lead-in, a 5 ms one and a 25 ms one (and any other
  ``--lead-ins``): each side's spread (IQR / median of its blocks), the first JAX blocks in
  order, and the speedup (median paired ratio torch / JAX, 95% interval);
* each side alone in its steady state (``--alone`` seconds of warm-up, then ``--alone``
  seconds of blocks, one side at a time): the speedup each side reaches without the other.

On a 2-core machine torch's OpenMP workers spin for milliseconds after a torch call, and a JAX
block timed right after a torch block loses the cores to them: with no lead-in the JAX blocks
alternate fast and slow and the speedup understates JAX. ::

    python -m benchmarks.leadin                        # mlp, ae, conv1d forward
    python -m benchmarks.leadin --models mlp --modes forward,train --lead-ins 0,5,10,25,50
    python -m benchmarks.leadin --json out.json

Run it on a quiet machine: nothing else running, and not beside another benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys

from .record import Case, Options


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.leadin",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,ae,conv1d")
    p.add_argument("--modes", default="forward")
    p.add_argument("--lead-ins", default="0,5,25", metavar="MS[,MS...]",
                   help="lead-in lengths to compare, in ms (default 0,5,25)")
    p.add_argument("--rounds", type=int, default=24, help="timed rounds per setting")
    p.add_argument("--alone", type=float, default=2.0, metavar="SECONDS",
                   help="warm-up and then timing of each side alone (default 2 s each)")
    p.add_argument("--block-ms", type=float, default=25.0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from . import stats, steps
    from .device import detect
    from .report import ratio
    from .timing import alone, measure

    device = detect()
    opts = Options(size="quick")
    block_s = args.block_ms / 1e3
    print(f"device: {device.name}; torch threads {device.threads_torch}, XLA threads "
          f"{device.threads_xla}; blocks of {args.block_ms:g} ms, {args.rounds} rounds")
    results = []
    for model in args.models.split(","):
        pair = steps.build_pair(Case(model, "float32", None), opts, device)
        for mode in args.modes.split(","):
            if mode == "forward":
                sides = {"jax": steps.jax_forward(pair, 0).run,
                         "torch_eager": steps.torch_forward(pair, device, pair.torch_model)}
            else:
                opt, _ = steps.adam(pair.torch_model.parameters())
                sides = {"jax": steps.jax_train(pair, 0).run,
                         "torch_eager": steps.torch_train(
                             pair, device, steps.WithLoss(pair.torch_model, pair.loss), opt)}
            solo = {n: alone(run, warmup_s=args.alone, seconds=args.alone, block_s=block_s)
                    for n, run in sides.items()}
            solo_ms = {n: 1e3 * stats.quartiles(xs)[1] for n, xs in solo.items()}
            solo_speedup = solo_ms["torch_eager"] / solo_ms["jax"]
            row = {"model": model, "mode": mode, "alone_ms": solo_ms,
                   "alone_spread": {n: stats.relative_spread(xs) for n, xs in solo.items()},
                   "alone_speedup": solo_speedup, "interleaved": {}}
            print(f"\n{model} {mode}: alone JAX {solo_ms['jax']:.3f} ms "
                  f"({row['alone_spread']['jax']:.0%}), torch {solo_ms['torch_eager']:.3f} ms "
                  f"({row['alone_spread']['torch_eager']:.0%}): {solo_speedup:.2f}x")
            for lead_ms in (float(v) for v in args.lead_ins.split(",")):
                t = measure(sides, block_s=block_s, budget_s=args.alone,
                            lead_in_s=lead_ms / 1e3, rounds=args.rounds)
                ci = t.ci("torch_eager", "jax")
                spread = {n: stats.relative_spread(xs) for n, xs in t.blocks.items()}
                first = [round(1e3 * b, 2) for b in t.blocks["jax"][:8]]
                row["interleaved"][lead_ms] = {
                    "spread": spread, "speedup": ci and ci[0], "speedup_ci": ci and ci[1:],
                    "jax_ms": [1e3 * b for b in t.blocks["jax"]],
                    "torch_eager_ms": [1e3 * b for b in t.blocks["torch_eager"]],
                    "off_alone": ci and ci[0] / solo_speedup - 1}
                print(f"  lead-in {lead_ms:4g} ms: JAX spread {spread['jax']:4.0%}, torch "
                      f"{spread['torch_eager']:4.0%}; speedup "
                      f"{ratio(ci and ci[0], None, ci and ci[1:])} "
                      f"({(ci[0] / solo_speedup - 1) if ci else float('nan'):+.0%} from alone); "
                      f"first JAX blocks (ms) {first}")
            results.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.name, "block_ms": args.block_ms, "rounds": args.rounds,
                       "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    from . import configure_process

    configure_process()  # as python -m benchmarks: before JAX starts
    main()
    sys.exit(0)
