"""The record schema: what one timed case says, as written to JSON and read back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .timing import LEAD_IN_S

__all__ = ["Options", "Case", "Record", "results_dir"]


def results_dir(given: str | Path | None = None) -> Path:
    """Where ``--save`` writes: the folder given, else ``benchmarks/results`` under the current
    directory (the repository's own results when run from its root; never the installed
    package's folder)."""
    return Path(given) if given is not None else Path.cwd() / "benchmarks" / "results"


@dataclass(frozen=True)
class Options:
    size: str = "bench"  # the registry configuration: 'bench', 'quick' or 'test'
    block_s: float = 0.1  # each timed block lasts at least this long
    lead_in_s: float = LEAD_IN_S  # the untimed lead-in of the same side before each block
    budget_s: float = 60.0  # warm-up and timing per (case, mode), compilation apart
    torch_compile: bool = False
    precision: str = "highest"
    lowering: str = "platform"  # flax_arch.nn.lowering.forms: 'platform', 'rewrite' or 'xla'
    peak_gflops: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Case:
    model: str
    dtype: str
    batch_size: int | None  # None: the registry's


# fields renamed since earlier runs' JSON, read by --report
_RENAMED = {"jax_ms_iqr": "jax_iqr_ms", "torch_eager_ms_iqr": "torch_eager_iqr_ms",
            "torch_compile_ms_iqr": "torch_compile_iqr_ms", "warmup_samples": "warmup_blocks",
            "calls_per_sample": "calls_per_block"}


@dataclass
class Record:
    """One model, mode, dtype and batch size: the numbers and where they come from.

    ``speedup`` is the median over the undisturbed rounds of the paired ratio torch eager block
    / JAX block, ``speedup_ci`` its 95% interval (``[low, high]``); ``jax_ms`` and
    ``torch_eager_ms`` are each side's median block (ms per call), so that ``speedup`` is
    close to, but not exactly, their ratio.
    """

    model: str
    mode: str
    dtype: str
    batch_size: int | None
    device: str
    precision: str = ""
    lowering: str = "platform"  # the backend forms traced (flax_arch.nn.lowering.forms)
    family: str = ""
    size: str = "bench"
    jax_ms: float | None = None  # median block per side, ms per call
    torch_eager_ms: float | None = None
    torch_compile_ms: float | None = None
    speedup: float | None = None  # median paired ratio torch eager / JAX
    speedup_ci: list[float] | None = None  # its 95% interval [low, high]
    speedup_vs_compile: float | None = None  # median paired ratio torch.compile / JAX
    speedup_vs_compile_ci: list[float] | None = None
    jax_iqr_ms: float | None = None  # interquartile ranges of the kept blocks
    torch_eager_iqr_ms: float | None = None
    torch_compile_iqr_ms: float | None = None
    stable: bool | None = None  # None: no verdict (failed, skipped, or an earlier run's)
    unstable_reasons: list[str] = field(default_factory=list)
    other_cores: float | None = None  # cores other processes kept busy during the case
    jax_compile_s: float | None = None
    torch_compile_s: float | None = None
    flops: float | None = None  # per call
    flops_source: str = ""
    flops_xla: float | None = None
    flops_jaxpr: float | None = None  # matmul/conv only, scans times their length
    gflops: float | None = None  # achieved by JAX
    torch_gflops: float | None = None  # achieved by eager torch, same FLOP count
    peak_gflops: float | None = None
    peak_source: str = ""
    roofline: float | None = None  # gflops / peak_gflops
    rounds: int = 0  # timed rounds
    rounds_kept: int = 0  # of which undisturbed (CPU time / wall time at the side's usual)
    visits: list[int] = field(default_factory=list)  # rounds timed in each visit to the case
    lead_in_ms: float | None = None  # the untimed lead-in before each block
    warmup_blocks: dict[str, int] = field(default_factory=dict)
    calls_per_block: dict[str, int] = field(default_factory=dict)
    lead_in_calls: dict[str, int] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)  # per round, per call
    cpu_per_wall: dict[str, list[float | None]] = field(default_factory=dict)  # per round
    kept: list[bool] = field(default_factory=list)  # per round: undisturbed
    timing_s: float | None = None  # wall time of calibration, warm-up and rounds
    optimizer: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    load_avg: float | None = None  # 1-minute load average after the case
    process: str = ""  # "own": timed in a process of its own (benchmarks.isolate); "shared"
    error: str | None = None
    skipped: str | None = None  # why the case was not run
    torch_compile_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Record:
        """A record from JSON, earlier runs' included (renamed fields read, dropped ones
        ignored)."""
        known = {f.name for f in fields(cls)}
        items = ((_RENAMED.get(k, k), v) for k, v in record.items())
        return cls(**{k: v for k, v in items if k in known})
