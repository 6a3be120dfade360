"""``import flax_arch`` only defines; the CPU settings (XLA:CPU's flags, memory reuse) are
explicit calls."""

import json
import os
import platform
import resource
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
import jax._src.xla_bridge as xb  # the package looks there only in configure_cpu_memory()
print(json.dumps({{
    "env_changed": sorted(k for k in set(before) | set(os.environ)
                          if before.get(k) != os.environ.get(k)),
    "torch": "torch" in sys.modules,
    "backends": xb.backends_are_initialized(),
}}))
"""


def run_python(code: str, **env) -> str:
    run_env = {**{k: v for k, v in os.environ.items()
                  if k != "XLA_FLAGS" and not k.startswith("MALLOC_")}, **env}
    out = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def probe(prelude: str = "", **env) -> dict:
    return json.loads(run_python(PROBE.format(prelude=prelude), **env))


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


# A jitted call with a 100 MB temporary (the outer product), run in a fresh interpreter:
# the median of its calls' minor page faults. The median: with the setting, the heap may still
# grow once for a new block when a small allocation has split the freed one (seen beside
# another busy test process: one call in five faulted its 100 MB afresh), and later calls
# reuse it; without it, every call faults.
FAULTS = """
import resource, statistics
import flax_arch
{prelude}
import jax, jax.numpy as jnp
@jax.jit
def f(x):
    y = jnp.sin(x[:, None] * x[None, :])
    return (y @ y[:8].T).sum()
x = jnp.linspace(0, 1, 5000)
assert f.lower(x).compile().memory_analysis().temp_size_in_bytes > 90e6
for _ in range(3):
    f(x).block_until_ready()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_configure_cpu_memory_lets_each_call_reuse_the_last_calls_memory():
    pages = 100e6 / resource.getpagesize()
    plain = float(run_python(FAULTS.format(prelude="")))
    kept = float(run_python(FAULTS.format(prelude="flax_arch.configure_cpu_memory()")))
    # glibc maps a block this large afresh at each call and unmaps it on free: a fault a page
    assert plain > 0.5 * pages, plain
    assert kept < 0.01 * pages, kept


SETTINGS = """
import json, jax, flax_arch
settings = flax_arch.configure_cpu_memory()
assert flax_arch.xla.cpu_memory_settings() == settings
assert jax.config.values["jax_cpu_enable_async_dispatch"] is False
print(json.dumps(settings))
"""

LATE = """
import jax, flax_arch
jax.numpy.ones(1).block_until_ready()
try:
    flax_arch.configure_cpu_memory()
except RuntimeError as e:
    assert "before JAX starts its backends" in str(e)
    assert jax.config.values["jax_cpu_enable_async_dispatch"] is True
    assert flax_arch.xla.cpu_memory_settings() == {}
    print("refused")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_configure_cpu_memory_says_what_it_set_leaves_yours_and_refuses_late():
    ours = json.loads(run_python(SETTINGS))
    assert ours == {"MALLOC_MMAP_THRESHOLD_": str(xla.MMAP_THRESHOLD),
                    "MALLOC_TRIM_THRESHOLD_": str(xla.TRIM_THRESHOLD),
                    "jax_cpu_enable_async_dispatch": "False"}
    yours = json.loads(run_python(SETTINGS, MALLOC_TRIM_THRESHOLD_="4096"))
    assert yours["MALLOC_TRIM_THRESHOLD_"] == "4096 (the environment's)"
    assert yours["MALLOC_MMAP_THRESHOLD_"] == str(xla.MMAP_THRESHOLD)
    assert run_python(LATE) == "refused"
