"""Each case in a process of its own, forked from one that has imported everything.

A case timed after others in the same process is timed in their leftovers: the allocator's
heap as the earlier cases' models left it. Measured (session 16, 2-core Intel Xeon, quick
sizes): ``rnn`` train alone in a process, torch 30.5 ms and JAX 33.0 ms a step (0.92x); after
``densenet121`` in the same process 38.7 and 34.0 ms (1.15x); as the 58th case of a full run
50.7 and 37.5 ms (1.35x). The quoted ratio depended on the cases before it. A forked child
starts from the parent's small heap every time, with the libraries imported (3.3 s a fresh
interpreter would pay again per case) and JAX's backends and torch's thread pools not yet
started: the parent must not start them (:func:`run` checks JAX's), as neither library's
threads survive a fork.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["available", "backends_started", "run", "CaseProcessDied"]

T = TypeVar("T")


class CaseProcessDied(RuntimeError):
    """The child process ended without a result (killed, out of memory, a crash)."""


def available() -> bool:
    """Whether cases can run in forked children here (Linux; macOS's system libraries are not
    fork-safe once threads ran, and Windows has no fork)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def backends_started() -> bool:
    """Whether JAX's backends (and their threads) started in this process."""
    try:
        from jax._src import xla_bridge
    except ImportError:  # JAX's private module moved: trust the caller
        return False
    return xla_bridge.backends_are_initialized()


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a forked child; its return value (pickled back), or its
    exception raised here. Without fork (:func:`available`), in this process.

    An interrupt here (SIGINT, or the SIGTERM ``python -m benchmarks`` turns into one) kills
    the child and is raised; a child that dies without a result raises
    :class:`CaseProcessDied`."""
    if not available():
        return fn(*args, **kwargs)
    if backends_started():
        raise RuntimeError("benchmarks.isolate.run: JAX's backends already started in this "
                           "process, and their threads would not exist in a forked child; "
                           "start them in the children only")
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's frames
        status = 1
        try:
            os.close(read)
            try:
                outcome = ("value", fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001 - handed to the parent
                outcome = ("error", err)
            try:
                data = pickle.dumps(outcome)
            except Exception as err:  # noqa: BLE001 - an unpicklable value or exception
                data = pickle.dumps(("error", RuntimeError(f"{outcome[0]} not picklable: "
                                                           f"{err}; {outcome[1]!r}")))
            with os.fdopen(write, "wb") as f:
                f.write(data)
            status = 0
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:
        _kill(pid)
        raise
    if not data:
        raise CaseProcessDied(f"the case's process ended without a result ({_why(status)})")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise value
    return value


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _why(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}" + (
            ": out of memory?" if sig == signal.SIGKILL else "")
    return f"exit status {os.WEXITSTATUS(status)}"
