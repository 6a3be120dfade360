"""Benchmarks: every registered model under jit-compiled XLA against eager PyTorch.

Run ``python -m benchmarks --help``; see :mod:`benchmarks.harness` for how each number is
measured and :mod:`benchmarks.device` for the peak FLOP/s behind the roofline.
"""
