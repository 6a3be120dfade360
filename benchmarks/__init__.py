"""Benchmarks: every registered model under jit-compiled XLA against eager PyTorch.

Run ``python -m benchmarks --help``. Where things live: :mod:`benchmarks.timing` times the
sides (lead-ins, rounds, undisturbed rounds), :mod:`benchmarks.stats` judges them (the median
paired ratio, its 95% interval, the verdict), :mod:`benchmarks.steps` builds the two sides of a
case, :mod:`benchmarks.harness` runs the cases into :mod:`benchmarks.record` records, and
:mod:`benchmarks.report` prints them; :mod:`benchmarks.device` states the peak FLOP/s behind
the roofline. Installed from a wheel, this package is ``flax_arch_benchmarks``.
"""
