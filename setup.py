"""The one thing pyproject.toml cannot say: the benchmark's folder ``benchmarks/`` is installed
as ``flax_arch_benchmarks``, so that a wheel never adds a top-level ``benchmarks`` package
that could shadow a user's own. In a checkout, ``python -m benchmarks`` runs it from the
folder; installed, ``python -m flax_arch_benchmarks``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["flax_arch", "flax_arch.*", "torch_ref", "torch_ref.*"])
    + ["flax_arch_benchmarks"],
    package_dir={"flax_arch_benchmarks": "benchmarks"},
)
