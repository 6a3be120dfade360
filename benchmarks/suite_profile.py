"""Where the test suite's time goes: a pytest plugin.

    python -m pytest -n 2 -p benchmarks.suite_profile [--suite-profile-json PATH]

For each test it records the wall and CPU seconds, the seconds JAX spent tracing (Python to
jaxpr), lowering (jaxpr to StableHLO) and compiling (XLA), the number of XLA compilations,
the process's resident size afterwards and its peak during the test (Linux: the high-water
mark, reset before each test). At the end of the run it prints, per test file,
the totals sorted by wall time, then the longest tests, then the run's compilation floor:
tracing, lowering and compiling summed and divided among the processes that ran tests. No
suite whose checks compile these programs can run faster than that floor on that machine.

Under pytest-xdist each worker measures its own tests and hands the records to the
controller, which prints them (and imports no JAX). Timings are the machine's at that moment:
quote them with the machine, and never while anything else runs.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict

import pytest

# jax.monitoring's duration events (jax._src.dispatch), by the column they add to
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}
COLUMNS = ("wall", "cpu", "trace", "lower", "compile")
SHOWN = 10  # longest tests printed


def resident_bytes() -> int | None:
    """This process's resident set size, or None where /proc is not there."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def reset_peak() -> bool:
    """Resets this process's resident high-water mark (Linux's ``clear_refs``); False where it
    cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_resident_bytes() -> int | None:
    """This process's resident high-water mark (VmHWM), or None where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def is_xdist_controller(config) -> bool:
    """pytest-xdist's controller (``-n``): it schedules and reports, and runs no test."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(
        config, "workerinput")


_ACTIVE: list[SuiteProfile] = []  # the profiles of the sessions running in this process
_LISTENING = [False]


def _on_event(event: str, duration: float, **_) -> None:
    column = EVENTS.get(event)
    if column is not None:
        for profile in _ACTIVE:
            profile.add(column, duration)


class SuiteProfile:
    """One session's records; ``current`` accumulates the running test's JAX seconds."""

    def __init__(self, config):
        self.config = config
        self.records: list[dict] = []
        self.current: dict[str, float] = {}
        self.workers = 1

    def add(self, column: str, duration: float) -> None:
        self.current[column] = self.current.get(column, 0.0) + duration
        if column == "compile":
            self.current["programs"] = self.current.get("programs", 0) + 1

    # -------------------------------------------------------------- in processes that run tests

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = {}
        peaked = reset_peak()
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.records.append({
            "test": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            **{c: self.current.get(c, 0.0) for c in ("trace", "lower", "compile")},
            "programs": int(self.current.get("programs", 0)), "rss": resident_bytes() or 0,
            "peak": (peak_resident_bytes() or 0) if peaked else 0})

    def pytest_sessionfinish(self, session):
        if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker
            session.config.workeroutput["suite_profile"] = json.dumps(self.records)

    # -------------------------------------------------------------- in the controller

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        self.records += json.loads(getattr(node, "workeroutput", {}).get("suite_profile", "[]"))

    def pytest_terminal_summary(self, terminalreporter):
        if not self.records:
            return
        path = self.config.getoption("suite_profile_json")
        if path:
            with open(path, "w") as f:
                json.dump(self.records, f, indent=1)
        for line in report(self.records):
            terminalreporter.write_line(line)


def report(records: list[dict]) -> list[str]:
    """The table the plugin prints, from its records."""
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in records:
        f = files[r["test"].split("::")[0]]
        f["tests"] += 1
        f["programs"] += r["programs"]
        for c in COLUMNS:
            f[c] += r[c]
    total: dict[str, float] = defaultdict(float)
    for f in files.values():
        for k, v in f.items():
            total[k] += v
    head = f"{'file':44s} {'tests':>5s} " + " ".join(f"{c + ' s':>9s}" for c in COLUMNS)
    lines = ["", "suite profile (seconds summed over the processes that ran tests)", head + "  programs"]

    def row(name, f):
        return (f"{name:44s} {int(f['tests']):5d} " + " ".join(f"{f[c]:9.1f}" for c in COLUMNS)
                + f"  {int(f['programs']):8d}")

    lines += [row(name, f) for name, f in sorted(files.items(), key=lambda kv: -kv[1]["wall"])]
    lines.append(row("all", total))
    lines += ["", f"the {SHOWN} longest tests (wall, compile s, programs, resident GiB after):"]
    for r in sorted(records, key=lambda r: -r["wall"])[:SHOWN]:
        lines.append(f"  {r['wall']:7.1f} {r['compile']:7.1f} {r['programs']:5d} "
                     f"{r['rss'] / 2**30:6.2f}  {r['test']}")
    peaks = sorted((r for r in records if r.get("peak")), key=lambda r: -r["peak"])[:SHOWN]
    if peaks:
        lines += ["", f"the {len(peaks)} largest peaks (resident GiB during the test, wall s):"]
        lines += [f"  {r['peak'] / 2**30:6.2f} {r['wall']:7.1f}  {r['test']}" for r in peaks]
    workers = len({r["worker"] for r in records})
    jax_s = total["trace"] + total["lower"] + total["compile"]
    lines += ["", f"compilation floor: {jax_s:.1f} s of tracing, lowering and compiling over "
                  f"{workers} process(es): {jax_s / workers:.1f} s of wall time "
                  f"({100 * jax_s / max(total['wall'], 1e-9):.0f}% of the tests' time)"]
    return lines


def pytest_addoption(parser):
    parser.addoption("--suite-profile-json", default=None, metavar="PATH",
                     help="benchmarks.suite_profile: also write every test's record to PATH")


def pytest_configure(config):
    profile = SuiteProfile(config)
    config.pluginmanager.register(profile, "suite_profile_session")
    if is_xdist_controller(config):
        return
    import jax

    if not _LISTENING[0]:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _LISTENING[0] = True
    _ACTIVE.append(profile)


def pytest_unconfigure(config):
    profile = config.pluginmanager.get_plugin("suite_profile_session")
    if profile in _ACTIVE:
        _ACTIVE.remove(profile)
