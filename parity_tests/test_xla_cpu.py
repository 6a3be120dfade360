"""The XLA:CPU options flax_arch sets on import: added before JAX starts, never over the
user's own, switched off by FLAX_ARCH_XLA_CPU_FLAGS=0, and a warning when too late."""

import os
import subprocess
import sys

import pytest

from flax_arch import _xla_cpu

OPTION = _xla_cpu.CPU_FLAGS[0].split("=")[0]


def xla_flags_after_import(**env) -> str:
    env = {**{k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", _xla_cpu.OPT_OUT)},
           **env}
    code = "import os, flax_arch, jax; jax.devices(); print(os.environ.get('XLA_FLAGS', ''))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert "do not apply" not in out.stderr
    return out.stdout.strip()


def test_import_adds_the_flags_and_keeps_the_users_own():
    assert xla_flags_after_import() == " ".join(_xla_cpu.CPU_FLAGS)
    mine = "--xla_force_host_platform_device_count=2"
    assert xla_flags_after_import(XLA_FLAGS=mine) == " ".join([mine, *_xla_cpu.CPU_FLAGS])
    assert xla_flags_after_import(XLA_FLAGS=f"{OPTION}=dot") == f"{OPTION}=dot"
    assert xla_flags_after_import(**{_xla_cpu.OPT_OUT: "0"}) == ""


def test_too_late_is_a_warning_and_changes_nothing(monkeypatch):
    import jax

    jax.devices()  # this process's backends have started
    monkeypatch.setenv("XLA_FLAGS", "")
    if jax.default_backend() == "cpu":
        with pytest.warns(UserWarning, match="do not apply"):
            assert _xla_cpu.apply() == ()
    else:
        assert _xla_cpu.apply() == ()
    assert os.environ["XLA_FLAGS"] == ""
