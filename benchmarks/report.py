"""The results: a text table, a Markdown table, JSON records and a PNG chart of the speedups."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from . import stats
from .record import Record
from .stats import geomean

__all__ = ["header", "table", "markdown", "write_json", "plot", "compare", "ratio",
           "AGREE_WITHIN", "MAX_FLAGGED", "TIMING"]

# Two runs of the same cases reproduce when every speedup that both call stable agrees within
# AGREE_WITHIN (relatively), and each run flags at most MAX_FLAGGED of its timed cases.
AGREE_WITHIN = 0.10
MAX_FLAGGED = 0.10
# how every speedup is measured, in one line for the headers
TIMING = ("sides alternate block by block, each block after an untimed lead-in of its own "
          "side; speedup = median of the paired per-round ratios torch / JAX over the "
          "undisturbed rounds, [95% interval]")
# how the steps were run, by Record.process
_PROCESS = {"own": "each mode of each model in a process of its own, forked after the imports "
                   "(benchmarks/isolate.py)",
            "shared": "the cases one after another in one process (its heap as the earlier "
                      "cases left it)"}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def header(records: Sequence[Record]) -> list[str]:
    """Device, threads, precision, peaks, versions and date: what every number depends on."""
    if not records:
        return []
    r = records[0]
    v = r.versions
    lines = [
        f"device: {r.device}",
        f"threads: torch {r.threads.get('torch')}, XLA {r.threads.get('xla')}",
        "precision: " + "; ".join(sorted({x.precision for x in records if x.precision})),
        "lowering: " + "; ".join(f"{f} forms" for f in sorted({x.lowering for x in records}))
        + " (flax_arch.nn.lowering; platform: the CPU rewrites on CPU, XLA's ops elsewhere)",
    ]
    peaks = sorted({(x.dtype, x.peak_gflops, x.peak_source) for x in records},
                   key=lambda p: p[0])
    for dtype, peak, source in peaks:
        lines.append(f"peak {dtype}: {_fmt(peak, '.1f')} GFLOP/s ({source})")
    lines.append("versions: " + ", ".join(f"{k} {v[k]}" for k in
                                          ("jax", "jaxlib", "flax", "optax", "torch", "numpy",
                                           "python") if k in v))
    if v.get("XLA_FLAGS"):
        lines.append(f"XLA_FLAGS: {v['XLA_FLAGS']}")
    if v.get("memory"):
        lines.append(f"memory (flax_arch.configure_cpu_memory): {v['memory']}")
    processes = {x.process for x in records if x.process}
    if processes:
        lines.append("processes: " + "; ".join(_PROCESS[p] for p in sorted(processes)))
    loads = [x.load_avg for x in records if x.load_avg is not None]
    lines.append(f"date: {r.date}; size: {r.size}; 1-min load average during the run: "
                 f"{_fmt(min(loads, default=None), '.2f')}-{_fmt(max(loads, default=None), '.2f')}")
    leads = sorted({x.lead_in_ms for x in records if x.lead_in_ms is not None})
    if leads:
        lines.append(f"timing: {TIMING}; lead-in {', '.join(f'{v:g}' for v in leads)} ms")
        rounds = [(x.rounds_kept, x.rounds) for x in records if x.rounds]
        lines.append(f"rounds kept (undisturbed) / timed: {sum(k for k, _ in rounds)} / "
                     f"{sum(n for _, n in rounds)}")
    others = [x.other_cores for x in records if x.other_cores is not None]
    if others:
        lines.append(f"cores used by other processes during a case: {min(others):.2f}-"
                     f"{max(others):.2f} (median {sorted(others)[len(others) // 2]:.2f})")
    return lines


_COLUMNS = ("model", "mode", "dtype", "batch", "JAX ms", "±", "torch ms", "±", "compile ms",
            "speedup", "vs compile", "JAX comp s", "GFLOP/s", "% peak", "note")
# "±": the side's interquartile range over its median; an unstable case's speedups are in
# parentheses, its note says why.


def _spread(iqr: float | None, median: float | None) -> str:
    return "-" if iqr is None or not median else f"{100 * iqr / median:.0f}%"


def ratio(value: float | None, stable: bool | None = None,
          ci: Sequence[float] | None = None) -> str:
    """``1.91x [1.87, 1.94]``: a speedup and its interval, in parentheses when unstable."""
    if value is None:
        return "-"
    text = f"{value:.2f}x" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return text if stable is not False else f"({text})"


def _row(r: Record) -> list[str]:
    notes = []
    if r.skipped is not None:
        notes.append(r.skipped)
    if r.error is not None:
        notes.append(f"FAILED: {r.error}")
    if r.stable is False:
        notes.append("unstable: " + "; ".join(r.unstable_reasons))
    if r.torch_compile_error is not None:
        notes.append(f"torch.compile failed: {r.torch_compile_error}")
    return [r.model, r.mode, r.dtype, _fmt(r.batch_size, "d"), _fmt(r.jax_ms, ".3f"),
            _spread(r.jax_iqr_ms, r.jax_ms), _fmt(r.torch_eager_ms, ".3f"),
            _spread(r.torch_eager_iqr_ms, r.torch_eager_ms), _fmt(r.torch_compile_ms, ".3f"),
            ratio(r.speedup, r.stable, r.speedup_ci),
            ratio(r.speedup_vs_compile, r.stable, r.speedup_vs_compile_ci),
            _fmt(r.jax_compile_s, ".2f"), _fmt(r.gflops, ".3g"),
            _fmt(None if r.roofline is None else 100 * r.roofline, ".2g"), "; ".join(notes)]


def _summary(records: Sequence[Record]) -> list[str]:
    """Geometric means over the stable cases, per mode, naming the cases left out."""
    lines = []
    for key, label in (("speedup", "torch eager / JAX"), ("speedup_vs_compile",
                                                           "torch.compile / JAX")):
        timed = [r for r in records if getattr(r, key) is not None]
        if not timed:
            continue
        stable = [r for r in timed if r.stable]
        left_out = [f"{r.model} {r.mode}" for r in timed if not r.stable]
        by_mode: dict[str, list[float]] = {}
        for r in stable:
            by_mode.setdefault(r.mode, []).append(getattr(r, key))
        every = [s for ss in by_mode.values() for s in ss]
        if every:
            parts = [f"{m} {geomean(ss):.2f}x ({len(ss)})" for m, ss in by_mode.items()]
            lines.append(f"geometric mean {label} over the {len(every)} stable case(s): "
                         f"{geomean(every):.2f}x; " + ", ".join(parts)
                         + f"; below 1x: {sum(s < 1 for s in every)}")
        else:
            lines.append(f"geometric mean {label}: no stable case")
        if left_out:
            lines.append(f"left out, unstable or without a verdict: {len(left_out)} of "
                         f"{len(timed)} ({', '.join(left_out)})")
    for what in ("error", "skipped"):
        bad = [r for r in records if getattr(r, what) is not None]
        if bad:
            lines.append(f"{'failed' if what == 'error' else 'skipped'}: {len(bad)} "
                         f"({', '.join(sorted({r.model for r in bad}))})")
    return lines


def table(records: Sequence[Record]) -> str:
    """The plain-text table with its header, as printed at the end of a run."""
    rows = [list(_COLUMNS)] + [_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = header(records) + [""]
    for row in rows:
        cells = [c.rjust(w) if i > 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines + [""] + _summary(records))


def markdown(records: Sequence[Record], title: str = "Benchmark results") -> str:
    lines = [f"# {title}", ""] + [f"- {h}" for h in header(records)] + [
        "- speedup = the median over the undisturbed rounds of the paired ratio torch eager "
        "block / JAX block, with its 95% interval in brackets (vs compile: torch.compile / "
        "JAX); ± = IQR / median of that side's blocks; a speedup in parentheses is unstable (the "
        "note says why) and left out of the geometric means; GFLOP/s and % peak are JAX's",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(_COLUMNS) - 1)) + "|---|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _row(r)) + " |" for r in records]
    return "\n".join(lines + [""] + [f"{s}  " for s in _summary(records)]) + "\n"


def compare(first: Sequence[Record], second: Sequence[Record]) -> tuple[bool, list[str]]:
    """Whether two runs reproduce (see ``AGREE_WITHIN``, ``MAX_FLAGGED``), and the lines that
    say so: the cases whose stable speedups differ, and each run's unstable share."""

    def key(r: Record) -> tuple:
        return r.model, r.mode, r.dtype, r.batch_size, r.lowering

    def timed(records: Sequence[Record]) -> dict[tuple, Record]:
        return {key(r): r for r in records if r.speedup is not None}

    a, b = timed(first), timed(second)
    both = [k for k in a if k in b and a[k].stable and b[k].stable]
    differ = [(k, b[k].speedup / a[k].speedup - 1) for k in both
              if abs(b[k].speedup / a[k].speedup - 1) > AGREE_WITHIN]
    lines = [f"{len(both)} case(s) stable in both runs; {len(differ)} differ by more than "
             f"{AGREE_WITHIN:.0%}" + (": " if differ else "")
             + ", ".join(f"{m} {mode} {d:+.0%}" for (m, mode, *_), d in differ)]
    if both:
        worst = max(both, key=lambda k: abs(b[k].speedup / a[k].speedup - 1))
        lines.append(f"largest difference: {worst[0]} {worst[1]} "
                     f"{a[worst].speedup:.2f}x -> {b[worst].speedup:.2f}x")
    flagged_ok = True
    for name, run in (("first", a), ("second", b)):
        flagged = [f"{r.model} {r.mode}" for r in run.values() if not r.stable]
        share = len(flagged) / len(run) if run else 0.0
        flagged_ok &= share <= MAX_FLAGGED
        lines.append(f"{name} run: {len(flagged)} of {len(run)} unstable ({share:.0%})"
                     + (f": {', '.join(flagged)}" if flagged else ""))
    ok = bool(both) and not differ and flagged_ok
    lines.append(f"reproducible (agree within {AGREE_WITHIN:.0%}, at most {MAX_FLAGGED:.0%} "
                 f"unstable): {'yes' if ok else 'no'}")
    return ok, lines


def write_json(records: Sequence[Record], path: str) -> None:
    """The records as a JSON list, written atomically (a run rewrites it after every case)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump([r.to_json() for r in records], f, indent=1)
    os.replace(tmp, path)


def plot(records: Sequence[Record], path: str) -> None:
    """Horizontal bars of the speedup per model and mode, log scale, a line at 1x; a second
    panel against torch.compile when it was timed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    variants: dict[str, set] = {}
    for r in records:
        variants.setdefault(r.model, set()).add((r.dtype, r.batch_size))

    def label_of(r: Record) -> str:  # dtype and batch only where a model has several
        multi = len(variants[r.model]) > 1
        return f"{r.model} ({r.dtype}, b={r.batch_size})" if multi else r.model

    labels = list(dict.fromkeys(label_of(r) for r in records))
    modes = list(dict.fromkeys(r.mode for r in records))
    panels = [("speedup", "torch eager ms / JAX ms")]
    if any(r.speedup_vs_compile is not None for r in records):
        panels.append(("speedup_vs_compile", "torch.compile ms / JAX ms"))
    bar = 0.8 / max(len(modes), 1)  # bar height in rows
    height = 1.2 + 0.32 * len(labels) * max(len(modes), 1)  # inches
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), height), squeeze=False,
                             sharey=True)
    colors = {"forward": "#4C72B0", "train": "#DD8452"}
    for ax, (key, xlabel) in zip(axes[0], panels):
        values = [getattr(r, key) for r in records if getattr(r, key)]
        labelled = set()
        for r in records:
            y = labels.index(label_of(r)) + (modes.index(r.mode) - (len(modes) - 1) / 2) * bar
            value = getattr(r, key)
            if value is None:
                text = "failed" if r.error is not None else "not run"
                ax.text(1.0, y, f" {r.mode} {text}", va="center", fontsize=7, color="#C44E52")
                continue
            # a bar from 1x to the speedup: right of the line JAX is faster, left slower;
            # an unstable case hatched and pale, its label in parentheses
            kind = r.mode if r.stable is not False else f"{r.mode}, unstable"
            ax.barh(y, value - 1.0, left=1.0, height=bar * 0.9, color=colors.get(r.mode),
                    alpha=1.0 if r.stable is not False else 0.35,
                    hatch=None if r.stable is not False else "///",
                    label=None if kind in labelled else kind)
            labelled.add(kind)
            ax.text(value, y, f" {ratio(value, r.stable)} ", va="center", fontsize=7,
                    ha="left" if value >= 1 else "right")
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        lo, hi = min(values + [1.0]) / 2.0, max(values + [1.0]) * 2.0
        ticks = [t * 10.0 ** e for e in range(-4, 5) for t in (1, 2, 5) if lo <= t * 10.0 ** e <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks))  # 1-2-5 steps, no crowded minor labels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(lo, hi)
        ax.set_xlabel(f"speedup = {xlabel} (log scale; right of 1x: JAX faster)")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    r = records[0]
    dtypes = ", ".join(sorted({x.dtype for x in records}))
    fig.suptitle(f"JAX (XLA, jit) vs PyTorch: {r.device}, {dtypes}\njax "
                 f"{r.versions.get('jax')}, torch {r.versions.get('torch')}, {r.date[:10]}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))  # half an inch for the title
    fig.savefig(path, dpi=120)
    plt.close(fig)
