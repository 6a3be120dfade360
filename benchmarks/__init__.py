"""Benchmarks: every registered model under jit-compiled XLA against eager PyTorch.

Run ``python -m benchmarks --help``. Where things live: :mod:`benchmarks.timing` times the
sides (lead-ins, rounds, undisturbed rounds), :mod:`benchmarks.stats` judges them (the median
paired ratio, its 95% interval, the verdict), :mod:`benchmarks.steps` builds the two sides of a
case, :mod:`benchmarks.harness` runs the cases into :mod:`benchmarks.record` records, and
:mod:`benchmarks.report` prints them; :mod:`benchmarks.device` states the peak FLOP/s behind
the roofline. Installed from a wheel, this package is ``flax_arch_benchmarks``.
"""


def configure_process() -> None:
    """What every benchmark script sets first, before JAX starts its backends: XLA:CPU's flags
    (:func:`flax_arch.configure_xla_cpu`) and the process's memory reuse
    (:func:`flax_arch.configure_cpu_memory`, for both libraries). The records carry both."""
    from flax_arch.xla import configure_cpu_memory, configure_xla_cpu

    configure_cpu_memory()
    configure_xla_cpu()
