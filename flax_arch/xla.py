"""XLA:CPU options measured to help this project's models, as one explicit call.

XLA:CPU hands convolutions to its YNNPACK fusions by default; on a 2-core AVX-512 Xeon those
ran a 512 -> 256 channel 3x3 convolution at 64 GFLOP/s, against 275 GFLOP/s once the YNNPACK
fusions are limited to dots and reductions (torch/oneDNN: ~300). Elementwise ops stay with
XLA's own loop fusions: YNNPACK's elementwise fusions take every broadcast operand as a
materialised full-size tensor (a BatchNorm scale becomes 51 MB in ResNet-18's stem). The
measurements are in ``benchmarks/results/history/``.

Nothing here runs on import. ``python -m benchmarks`` and ``python -m flax_arch.train`` call
:func:`configure_xla_cpu` for themselves; a user calls it first thing, before any JAX
computation (XLA reads ``XLA_FLAGS`` once, when JAX starts its backends; JAX offers no public
way to ask whether that has happened, so a late call silently changes nothing).
"""

from __future__ import annotations

import os

__all__ = ["CPU_FLAGS", "configure_xla_cpu"]

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
