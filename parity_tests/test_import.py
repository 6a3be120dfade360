"""``import flax_arch`` only defines; XLA:CPU's options are an explicit call."""

import os
import subprocess
import sys

import pytest

from flax_arch import xla

OPTION = xla.CPU_FLAGS[0].split("=")[0]

# Run in a fresh interpreter: what the import leaves behind, as JSON.
PROBE = """
import json, os, sys, warnings
warnings.simplefilter("error")
before = dict(os.environ)
{prelude}
import flax_arch
import jax._src.xla_bridge as xb  # the test may look inside JAX; the package never does
print(json.dumps({{
    "env_changed": sorted(k for k in set(before) | set(os.environ)
                          if before.get(k) != os.environ.get(k)),
    "torch": "torch" in sys.modules,
    "backends": xb.backends_are_initialized(),
}}))
"""


def probe(prelude: str = "", **env) -> dict:
    import json

    run_env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, **env}
    out = subprocess.run([sys.executable, "-c", PROBE.format(prelude=prelude)], env=run_env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("prelude", ["", "import jax; jax.numpy.ones(1).block_until_ready()"],
                         ids=["before JAX starts", "after JAX started"])
def test_import_changes_nothing_starts_nothing_warns_nothing(prelude):
    seen = probe(prelude)
    assert seen["env_changed"] == []
    assert seen["torch"] is False
    assert seen["backends"] is bool(prelude)  # only the prelude's own computation


def test_configure_xla_cpu_adds_its_flags_once_and_never_over_yours(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla.configure_xla_cpu() == xla.CPU_FLAGS
    assert os.environ["XLA_FLAGS"] == " ".join(xla.CPU_FLAGS)
    assert xla.configure_xla_cpu() == ()  # a second call adds nothing
    mine = f"{OPTION}=dot --xla_cpu_use_onednn=false"
    monkeypatch.setenv("XLA_FLAGS", mine)
    assert xla.configure_xla_cpu() == ()
    assert os.environ["XLA_FLAGS"] == mine
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=false")
    assert xla.configure_xla_cpu() == xla.CPU_FLAGS
    assert os.environ["XLA_FLAGS"] == " ".join(["--xla_cpu_use_onednn=false", *xla.CPU_FLAGS])
