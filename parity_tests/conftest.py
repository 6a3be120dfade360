"""Strict numerics for the whole suite: float64 available, no implicit rank promotion,
full-precision matmuls (TF32 off in torch when a GPU is present); each pytest-xdist worker on
its share of the cores, its memory bounded.

Only the processes that run tests import JAX and torch: pytest-xdist's controller (``-n``)
schedules and reports, and importing them there delayed every worker's start by ~4 s.

The suite sets no persistent compilation cache: within one run it found ~3% of the programs,
and computing keys and writing every other entry cost what those hits saved. Across runs it
pays: JAX's own ``JAX_COMPILATION_CACHE_DIR`` (README) made the second whole run 336 s instead
of 546 s (2-core AMD EPYC; 179 programs, 21 MB)."""

import ctypes
import gc
import os
import sys

import pytest

from benchmarks.suite_profile import is_xdist_controller, resident_bytes


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker's torch and XLA:CPU use their share of the cores: with
    as many workers as cores, one thread each (oversubscribed, -n 2 on 2 cores ran ~20%
    slower). XLA reads XLA_FLAGS when its backend starts, after this."""
    import torch

    from flax_arch.xla import configure_xla_cpu

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not workers:
        return
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    torch.set_num_threads(threads)
    if threads == 1:
        configure_xla_cpu(("--xla_cpu_multi_thread_eigen=false",))


def _no_huge_page_advice() -> None:
    """NumPy asks the kernel for transparent huge pages for each array of 4 MB and more
    (``madvise(MADV_HUGEPAGE)``); where the kernel then compacts memory on each first touch
    and fails to find huge pages (this 2-core KVM machine: ``defrag`` is ``madvise``,
    ``AnonHugePages`` stays 0), a fresh 1 GB array took 6.4 s to fill instead of 0.49 s, and
    a float64 ResNet-18's checks (their flattened parameter vectors, Adam's bound) took 11.8 s
    instead of 8.6 s. Plain pages for the tests' arrays (NumPy's own switch,
    ``NUMPY_MADVISE_HUGEPAGE=0``, read only when NumPy is first imported)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def _large_allocations_mapped() -> None:
    """Every allocation of 1 MiB and more gets its own mapping, returned to the system when
    freed. glibc's default threshold starts at 128 KiB and rises to 32 MiB as large blocks
    are freed, after which the checks' parameter-sized arrays (a float64 ResNet's 18 MB
    convolution weights) come from the heap and leave it fragmented: the float64 ResNet-18
    eval check alone peaked at 2.43-2.44 GiB (three runs), 2.07 GiB (three runs) with this."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (AttributeError, OSError):  # not glibc
        pass


def pytest_configure(config):
    if is_xdist_controller(config):
        return
    _no_huge_page_advice()
    _large_allocations_mapped()
    _share_the_cores()

    import jax
    import torch

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    jax.monitoring.register_event_duration_secs_listener(_trim_after_large_compilations)


def pytest_collection_finish(session):
    """What the imports and the collection made (modules, test parameters) lives for the
    whole run: frozen, the garbage collector no longer walks it on each full collection."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _torch_threads_kept():
    """torch's thread count as each test found it: the benchmark's device detection gives
    torch every core, and the next tests of that worker then rounded otherwise (torch's
    float32 reductions follow its threads: DenseNet's float32 Adam state came 5.48e-5 from
    JAX's on one thread, 4.42e-5 on two), so the suite's float32 errors depended on which
    worker ran which test."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def short_clock(monkeypatch):
    """The benchmark's clock made short, for CLI tests that check records and reports, not
    timings: each case gets two rounds at least instead of MIN_BUDGET_ROUNDS, and the machine
    check 0.1 s instead of 1 s (test_benchmarks.py's CLI tests took ~66 s of a 2-core machine
    without, ~16 s with; the timing rules are tested there on a fake clock)."""
    from benchmarks import timing

    check = timing.check_machine
    monkeypatch.setattr(timing, "MIN_BUDGET_ROUNDS", 2)
    monkeypatch.setattr(timing, "check_machine",
                        lambda seconds=1.0, block_s=0.025: check(min(seconds, 0.1), block_s))


# A worker above this resident size after a test drops every JAX cache (see below), unless
# it has not grown by RELEASE_GROWTH_BYTES since the last release left it where it is.
RELEASE_ABOVE_BYTES = 5 << 28  # 1.25 GiB
RELEASE_GROWTH_BYTES = 1 << 28  # 256 MiB
_after_release = [0]  # the resident size the last release left


def _return_freed_memory() -> None:
    """Hands freed heap pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


# XLA compiles a large program (a whole model's value-and-gradient) in heap memory that it
# frees afterwards, but glibc keeps most of it: GoogLeNet's float64 gradient left its process
# at 2.21 GiB after compiling, 1.54 GiB once trimmed, and its checks then peaked at 3.03 GiB
# untrimmed, 2.19 GiB trimmed. Trimming after each compilation longer than this (a few ms
# each) hands the pages back.
TRIM_AFTER_COMPILE_SECS = 0.5


def _trim_after_large_compilations(event: str, duration: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration" and duration > TRIM_AFTER_COMPILE_SECS:
        _return_freed_memory()


@pytest.fixture(autouse=True)
def _release_compiled_checks():
    """Each test's compiled parity checks are dropped after it: kept, a few MB each, they
    would add up to gigabytes over the suite (a test that checks one pair twice still
    reuses them). JAX's other caches grow a worker by ~4 GB over the suite too, yet save
    recompiling eager operations within a test file: so a worker drops all of them only once
    its resident size passes RELEASE_ABOVE_BYTES (measured on test_layers.py: clearing after
    every test bounded it at ~1 GB but doubled the time; at 1.5 GiB the largest worker of two
    whole-suite runs peaked at 2.95 and 3.13 GiB). A release cannot always bring a worker
    back under the threshold (after GoogLeNet's checks one stayed above it for 218 tests,
    releasing after each: test_layers.py took 168 s of CPU instead of ~100), so the next one
    waits until the worker has grown by RELEASE_GROWTH_BYTES from where the last one left it."""
    yield
    import jax

    import flax_arch.testing

    flax_arch.testing.clear_caches()
    rss = resident_bytes()
    floor = max(RELEASE_ABOVE_BYTES, _after_release[0] + RELEASE_GROWTH_BYTES)
    if rss is not None and rss > floor:
        jax.clear_caches()
        gc.collect()
        _return_freed_memory()
        _after_release[0] = resident_bytes() or 0


# The largest errors of each worker, merged by pytest-xdist's controller.
_WORKERS_ERRORS: dict[tuple[str, ...], float] = {}


def _errors() -> dict[tuple[str, ...], float]:
    """This process's largest parity errors: its own (where the harness ran), its workers'."""
    harness = sys.modules.get("parity_tests.harness")
    errors = dict(_WORKERS_ERRORS)
    for key, err in (harness.ERRORS.items() if harness else ()):
        errors[key] = max(errors.get(key, 0.0), err)
    return errors


def pytest_sessionfinish(session):
    """Under pytest-xdist, each worker hands its largest errors to the controller."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["parity_errors"] = [[*k, v] for k, v in _errors().items()]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for *key, err in getattr(node, "workeroutput", {}).get("parity_errors", []):
        _WORKERS_ERRORS[tuple(key)] = max(_WORKERS_ERRORS.get(tuple(key), 0.0), err)


def pytest_terminal_summary(terminalreporter):
    errors = _errors()
    if not errors:
        return
    terminalreporter.section("largest parity errors (max|diff| / max(1, max|ref|))")
    for (family, dtype, what), err in sorted(errors.items()):
        terminalreporter.write_line(f"{family:12s} {dtype:8s} {what:14s} {err:.2e}")
