"""XLA:CPU options measured to help this project's models, as two explicit calls.

XLA:CPU hands convolutions to its YNNPACK fusions by default; on a 2-core AVX-512 Xeon those
ran a 512 -> 256 channel 3x3 convolution at 64 GFLOP/s, against 275 GFLOP/s once the YNNPACK
fusions are limited to dots and reductions (torch/oneDNN: ~300). Elementwise ops stay with
XLA's own loop fusions: YNNPACK's elementwise fusions take every broadcast operand as a
materialised full-size tensor (a BatchNorm scale becomes 51 MB in ResNet-18's stem). The
measurements are in ``benchmarks/results/history/``.

:func:`configure_cpu_memory` keeps a step's large buffers out of fresh pages. XLA:CPU
allocates each call's temporaries anew (one block per call, 48-165 MB for the quick sizes'
training steps), and glibc maps every block above its mmap threshold (at most 32 MiB, and
always above 64 MiB on any thread but the main one) and unmaps it on free: every call then
pays a page fault per 4 KiB it touches. On a 2-core Xeon, a SEGAN generator's training step
faulted 24,176 times a call and took 86 ms; with this call 0 times and 67 ms (AlexNet's
179 -> 130 ms, an embedding table's 21 -> 8.9 ms). torch's CPU tensors come from the same
allocator and gain too (AlexNet's step 143 -> 92 ms): the setting is the process's, the same
for both libraries.

Nothing here runs on import. ``python -m benchmarks`` and ``python -m flax_arch.train`` call
both for themselves (40 DCGAN training steps at the bench size: 44.5 s against 47.9-48.2 s,
the same losses); a user calls them first thing, before any JAX computation (XLA reads
``XLA_FLAGS`` once, when JAX starts its backends; JAX offers no public way to ask whether
that has happened, so a late :func:`configure_xla_cpu` silently changes nothing; a late
:func:`configure_cpu_memory` raises).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["CPU_FLAGS", "configure_cpu_memory", "configure_xla_cpu", "cpu_memory_settings"]

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot,reduce",)


def configure_xla_cpu(flags: tuple[str, ...] = CPU_FLAGS) -> tuple[str, ...]:
    """Adds ``flags`` to ``XLA_FLAGS`` unless the same option is already set there (yours
    wins); returns the flags it added. Only the CPU backend reads them.

    Call it before the first JAX computation of the process::

        import flax_arch
        flax_arch.configure_xla_cpu()
    """
    current = os.environ.get("XLA_FLAGS", "")
    present = {f.split("=")[0] for f in current.split()}
    added = tuple(f for f in flags if f.split("=")[0] not in present)
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


# glibc's mallopt parameters (malloc.h) and the values set
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap, reused once freed
TRIM_THRESHOLD = (1 << 31) - 1  # and up to 2 GiB of freed heap kept (mallopt takes an int)
_ENV = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_"}

_applied: dict[str, str] = {}


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # JAX not installed: nothing started
        return False
    return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def configure_cpu_memory() -> dict[str, str]:
    """Lets freed memory serve the next call: glibc's heap keeps blocks up to 1 GiB
    (``mallopt``: mmap threshold 1 GiB, trim threshold 2 GiB; a ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` in the environment wins; without glibc, the allocator is left
    as it is), and JAX runs CPU computations on the calling thread
    (``jax_cpu_enable_async_dispatch=False``), whose arena, the main heap, has no 64 MiB
    ceiling. Returns what it set (also :func:`cpu_memory_settings`).

    The price: the process keeps up to 2 GiB of freed memory for reuse, and a CPU call
    returns when its result is ready (as a ``block_until_ready`` after each step would).
    Call it before JAX starts its backends::

        import flax_arch
        flax_arch.configure_cpu_memory()
        flax_arch.configure_xla_cpu()

    Raises RuntimeError if JAX's backends have already started (the dispatch setting is read
    when the CPU client is made); nothing is changed then.
    """
    if _backends_started():
        raise RuntimeError("configure_cpu_memory() must run before JAX starts its backends "
                           "(before the first JAX computation or jax.devices()); nothing "
                           "was changed")
    import jax

    settings = {}
    if platform.libc_ver()[0] == "glibc":
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                             (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
            name = _ENV[param]
            if name in os.environ:
                settings[name] = f"{os.environ[name]} (the environment's)"
            elif mallopt(param, value) == 1:
                settings[name] = str(value)
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    settings["jax_cpu_enable_async_dispatch"] = "False"
    _applied.update(settings)
    return dict(settings)


def cpu_memory_settings() -> dict[str, str]:
    """What :func:`configure_cpu_memory` set in this process ({} if it was not called)."""
    return dict(_applied)
