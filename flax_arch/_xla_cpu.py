"""The XLA:CPU options this package sets, because they were measured to help.

XLA:CPU hands convolutions to its YNNPACK fusions by default; on a 2-core AVX-512 Xeon those
run a 512 -> 256 channel 3x3 convolution at 64 GFLOP/s, against 275 GFLOP/s once the YNNPACK
fusions are limited to dots and reductions (torch/oneDNN: ~300). Elementwise ops stay with
XLA's own loop fusions: YNNPACK's elementwise fusions take every broadcast operand as a
materialised full-size tensor (a BatchNorm scale becomes 51 MB in ResNet-18's stem), and
those copies were a fifth of a ResNet-18 training step. Over the benchmark's 64 cases the
geometric-mean speedup against eager torch was 0.80x with XLA's defaults, 0.87x with
``dot,eltwise,reduce`` and 0.92x with ``dot,reduce`` (0.94x in another run); U-Net's forward
pass is 2.9x faster than with the defaults. The cost is two BatchNorm bottleneck nets'
training steps (ResNeXt and ResNet-50 1.3x slower than with ``dot,eltwise,reduce``), where
XLA then fuses BatchNorm chains into the transposes that feed 1x1 weight gradients.
benchmarks/results/cpu_2026-11-26*.md have the runs.

The flags go into ``XLA_FLAGS`` when :mod:`flax_arch` is imported, before JAX starts its
backends (XLA reads them then), unless the user already sets the same option there or
``FLAX_ARCH_XLA_CPU_FLAGS=0``. They only concern the CPU backend.
"""

from __future__ import annotations

import os
import warnings

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=dot,reduce",)
OPT_OUT = "FLAX_ARCH_XLA_CPU_FLAGS"


def apply() -> tuple[str, ...]:
    """Adds :data:`CPU_FLAGS` to ``XLA_FLAGS``; returns the flags it added."""
    if os.environ.get(OPT_OUT, "1") == "0":
        return ()
    current = os.environ.get("XLA_FLAGS", "")
    added = tuple(f for f in CPU_FLAGS if f.split("=")[0] not in current)
    if not added:
        return ()
    from jax._src import xla_bridge  # no public way to ask whether backends have started

    if xla_bridge.backends_are_initialized():
        import jax

        if jax.default_backend() != "cpu":
            return ()
        warnings.warn(
            f"flax_arch was imported after JAX started its backends, so its XLA:CPU options "
            f"{' '.join(added)} do not apply (convolutions run up to 4x slower on CPU). "
            f"Import flax_arch first, or set them in XLA_FLAGS; {OPT_OUT}=0 silences this.",
            stacklevel=3,
        )
        return ()
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
