"""Strict numerics for the whole suite: float64 available, no implicit rank promotion,
full-precision matmuls (TF32 off in torch when a GPU is present)."""

import jax
import pytest
import torch

import flax_arch.testing

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(autouse=True)
def _release_compiled_checks():
    """Each test's compiled parity checks are dropped after it: kept, a few MB each, they
    would add up to gigabytes over the suite (a test that checks one pair twice still
    reuses them)."""
    yield
    flax_arch.testing.clear_caches()


def pytest_sessionfinish(session):
    """Under pytest-xdist, each worker hands its largest errors to the controller."""
    from parity_tests.harness import ERRORS

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["parity_errors"] = [[*k, v] for k, v in ERRORS.items()]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    from parity_tests.harness import ERRORS

    for *key, err in getattr(node, "workeroutput", {}).get("parity_errors", []):
        ERRORS[tuple(key)] = max(ERRORS.get(tuple(key), 0.0), err)


def pytest_terminal_summary(terminalreporter):
    from parity_tests.harness import ERRORS

    if not ERRORS:
        return
    terminalreporter.section("largest parity errors (max|diff| / max(1, max|ref|))")
    for (family, dtype, what), err in sorted(ERRORS.items()):
        terminalreporter.write_line(f"{family:12s} {dtype:8s} {what:14s} {err:.2e}")
