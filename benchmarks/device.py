"""The device both sides run on: its name, thread counts, precision settings and peak FLOP/s.

Peak FLOP/s (the roofline's ceiling), stated so a reader can check it:

* **CPU**: ``peak = cores x clock x FLOP/cycle/core``. ``cores`` are the cores this process may
  run on (``os.sched_getaffinity``), ``clock`` is the ``cpu MHz`` of ``/proc/cpuinfo`` (the
  nominal clock a VM reports; turbo can be higher, AVX-512 licence clocks lower), and
  FLOP/cycle/core follows the widest FMA in the ``flags``, assuming two FMA ports per core
  (Xeon Gold/Platinum since Skylake-SP; one-port parts reach half):

  - float32: ``avx512f`` 2 ports x 16 lanes x 2 (multiply + add) = 64; ``avx2``+``fma`` 32;
    otherwise SSE 2 x 4 x 2 = 16.
  - bfloat16: ``amx_bf16`` 1024 (Intel's AMX figure per core); ``avx512_bf16`` (VDPBF16PS,
    two products per float32 lane) twice the float32 rate. Without either, bfloat16 is
    emulated, and the device "lacks" it for this benchmark.

* **NVIDIA GPU**: the dense (non-sparse) figures of NVIDIA's datasheets, by card name: FP32
  (CUDA cores) for float32 at ``highest`` precision, TF32 tensor cores at ``tf32``, BF16 tensor
  cores for bfloat16.

``--peak-gflops`` replaces the assumed peak.
"""

from __future__ import annotations

import os
import platform
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

import jax
import torch

__all__ = ["DeviceInfo", "detect", "versions", "matmul_precision", "slug", "cpu_name",
           "PRECISIONS", "DTYPES"]

DTYPES = ("float32", "bfloat16")
PRECISIONS = ("highest", "tf32")

# NVIDIA datasheets, dense TFLOP/s: (FP32, TF32 tensor, BF16 tensor).
_GPU_PEAK_TFLOPS = {
    "H200": (67.0, 494.7, 989.4),  # H200 SXM datasheet (NVL: 60 / 417.5 / 835.5)
    "H100 NVL": (60.0, 417.5, 835.5),
    "H100 PCIe": (51.0, 378.0, 756.0),
    "H100": (67.0, 494.7, 989.4),  # H100 SXM5 datasheet
    "A100": (19.5, 156.0, 312.0),
}


@dataclass
class DeviceInfo:
    """What a benchmark record says about where it ran."""

    platform: str  # 'cpu' or 'gpu'
    name: str
    torch_device: str
    threads_torch: int
    threads_xla: int
    flags: frozenset[str] = field(default_factory=frozenset, repr=False)
    clock_ghz: float | None = None
    gpu_name: str | None = None

    @property
    def slug(self) -> str:
        """The device as a file name: ``cpu_amd-epyc-2-cores``, ``gpu_nvidia-h200``."""
        return slug(self.platform, self.name)

    def supports(self, dtype: str) -> tuple[bool, str]:
        """Whether ``dtype`` runs natively here, and why not."""
        if dtype == "float32":
            return True, ""
        if self.platform == "gpu":
            if torch.cuda.is_bf16_supported():
                return True, ""
            return False, f"{self.name} has no bfloat16 support (torch.cuda.is_bf16_supported)"
        if self.flags & {"avx512_bf16", "amx_bf16"}:
            return True, ""
        return False, (f"{self.name} has neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo: "
                       "bfloat16 would be emulated, not measured")

    def peak_gflops(self, dtype: str, precision: str) -> tuple[float | None, str]:
        """The assumed peak GFLOP/s for ``dtype`` and the formula or source behind it."""
        if self.platform == "gpu":
            for key, (fp32, tf32, bf16) in _GPU_PEAK_TFLOPS.items():
                if key in (self.gpu_name or ""):
                    if dtype == "bfloat16":
                        return bf16 * 1e3, f"NVIDIA {key} datasheet, dense BF16 tensor core"
                    if precision == "tf32":
                        return tf32 * 1e3, f"NVIDIA {key} datasheet, dense TF32 tensor core"
                    return fp32 * 1e3, f"NVIDIA {key} datasheet, FP32 (CUDA cores)"
            return None, f"no datasheet figure for {self.gpu_name!r}: pass --peak-gflops"
        if self.clock_ghz is None:
            return None, "no clock in /proc/cpuinfo: pass --peak-gflops"
        f32, f32_why = _cpu_flops_per_cycle(self.flags)
        per_cycle, why = f32, f32_why
        if dtype == "bfloat16":
            if "amx_bf16" in self.flags:
                per_cycle, why = 1024, "amx_bf16: 1024"
            elif "avx512_bf16" in self.flags:
                per_cycle, why = 2 * f32, f"avx512_bf16: 2 x {f32}"
        peak = self.threads_xla * self.clock_ghz * per_cycle
        cores = f"{self.threads_xla} core{'s' * (self.threads_xla != 1)}"
        return peak, (f"{cores} x {self.clock_ghz:.2f} GHz x {per_cycle} "
                      f"FLOP/cycle ({why}, two FMA ports assumed)")


def slug(platform: str, name: str) -> str:
    """``platform`` and the device's ``name`` as a file name: lower case, dashes."""
    return f"{platform}_{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"


def _cpu_flops_per_cycle(flags: frozenset[str]) -> tuple[int, str]:
    if "avx512f" in flags:
        return 64, "avx512f: 2 ports x 16 lanes x 2"
    if {"avx2", "fma"} <= flags:
        return 32, "avx2+fma: 2 ports x 8 lanes x 2"
    return 16, "sse: 2 ports x 4 lanes x 2"


def _cpuinfo() -> tuple[str, frozenset[str], float | None]:
    """The first processor's model name, flags and clock (GHz) from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    mhz = fields.get("cpu MHz")
    return (fields.get("model name") or platform.processor() or "unknown CPU",
            frozenset(fields.get("flags", "").split()),
            float(mhz) / 1e3 if mhz else None)


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``, else the platform's word for it)."""
    return _cpuinfo()[0]


def detect() -> DeviceInfo:
    """Both sides on the same device: the GPU when JAX and torch both see one, else the CPU.

    Torch is given every core this process may use; XLA:CPU sizes its Eigen thread pool to
    the same count (``tsl::port::MaxParallelism``, the schedulable cores).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    backend = jax.default_backend()
    if backend == "gpu" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        return DeviceInfo("gpu", gpu, "cuda", torch.get_num_threads(), cores, gpu_name=gpu)
    if backend != "cpu":
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    name, flags, ghz = _cpuinfo()
    return DeviceInfo("cpu", f"{name} ({cores} core{'s' * (cores != 1)})", "cpu",
                      torch.get_num_threads(), cores, flags, ghz)


@contextmanager
def matmul_precision(device: DeviceInfo, dtype: str, precision: str):
    """The same matmul precision on both sides while the block runs; yields how it reads.

    float32 at ``highest``: true float32 products (JAX ``highest``, torch TF32 off); at
    ``tf32``: TF32 tensor cores on both (GPU only). bfloat16: bfloat16 operands, float32
    accumulation, both sides' defaults. XLA:CPU and torch on CPU compute float32 products in
    float32 whatever the setting.
    """
    tf32 = precision == "tf32" and dtype == "float32"
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    jax_precision = "tensorfloat32" if tf32 else ("highest" if dtype == "float32" else "default")
    if dtype == "bfloat16":
        what = "bfloat16 operands, float32 accumulation"
    elif device.platform == "cpu":
        what = "float32 (XLA:CPU and torch CPU compute float32 products in float32)"
    elif tf32:
        what = "tf32 (JAX tensorfloat32, torch allow_tf32)"
    else:
        what = "float32 (JAX highest, torch allow_tf32=False)"
    try:
        with jax.default_matmul_precision(jax_precision):
            yield what
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def versions() -> dict[str, str]:
    from flax_arch.xla import cpu_memory_settings

    import flax
    import jaxlib
    import numpy
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "memory": ", ".join(f"{k}={v}" for k, v in cpu_memory_settings().items()),
    }
