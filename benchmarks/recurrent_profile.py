"""Where the time of a recurrent layer goes on CPU: the pieces of one LSTM step under XLA:CPU
against torch's LSTM (a oneDNN primitive on CPU), and the forms of flax_arch's LSTM.

The registry's quick size, LSTM(100, 512) on 100 steps x batch 16, float32. Each scan below
runs 100 steps whose output feeds the next (so nothing is dead code and XLA cannot drop work):

* ``dot``: ``h @ w_hh`` (16 x 512 x 2048) alone, all of its columns used;
* ``dot + gi``: the same, plus each step's slice of the input projection;
* ``cell``: the LSTM cell alone on given gates (no matmul), each step's gates sliced in the
  step (XLA:CPU fuses that dynamic slice into the cell's fusion) or read one step ahead
  through the carry (``lowering._scan_ahead``, as the CPU form's differentiated loop does);
* ``empty``: a scan that adds 1 to its carry (the loop's own cost);
* the LSTM forward and gradient of ``sum(output ** 2)`` in each form of
  :func:`flax_arch.nn.lowering.recurrence` (``xla``: the plain scan; ``rewrite``: the CPU form);
* torch: ``nn.LSTM`` forward (no_grad) and forward + backward, with its oneDNN path
  (``aten::mkldnn_rnn_layer``, the default on CPU) and without (one matmul per step), and
  ``h @ w_hh`` alone.

Every case is timed in interleaved rounds (each round: a few calls of every case); the table
gives each case's minimum and median over rounds of the round's 25th percentile, in ms.
``python -m benchmarks.recurrent_profile [--rounds N]`` writes
``recurrent_profile_<device>.md`` under ``benchmarks/results/``. XLA_FLAGS are the
benchmark's (:func:`flax_arch.xla.configure_xla_cpu`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import configure_process

configure_process()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from jax import lax  # noqa: E402

from flax_arch.models.recurrent import LSTM, _lstm_cell  # noqa: E402
from flax_arch.nn import lowering  # noqa: E402

from .device import detect  # noqa: E402
from .record import results_dir  # noqa: E402

L, N, I, H = 100, 16, 100, 512
G = 4 * H


def _round(f, calls):
    ts = []
    for _ in range(calls):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    ts.sort()
    return ts[len(ts) // 4] * 1e3


def measure(cases, rounds, calls=5):
    for f in cases.values():
        for _ in range(3):
            f()
    got = {k: [] for k in cases}
    for _ in range(rounds):
        for k, f in cases.items():
            got[k].append(_round(f, calls))
    return {k: (min(v), float(np.median(v))) for k, v in got.items()}


def jax_cases():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((H, G)) / np.sqrt(H), jnp.float32)
    gi = jnp.asarray(rng.standard_normal((L, N, G)), jnp.float32)
    h0 = jnp.full((N, H), 0.1, jnp.float32)

    def chain(with_gi):
        def run(h0, w, gi):
            def step(h, g_t):
                g = h @ w + g_t if with_gi else h @ w
                return jnp.tanh(g.reshape(N, 4, H).sum(1)), None  # every column used
            return lax.scan(step, h0, gi)[0]
        return jax.jit(run)

    def cell(gi, h0):
        def step(carry, g_t):
            carry = _lstm_cell(g_t[None], 0.0, carry)
            return carry, carry[0]
        return lax.scan(step, (h0[None], h0[None]), gi)

    def cell_ahead(gi, h0):
        def step(carry, g_t):
            carry = _lstm_cell(g_t[None], 0.0, carry)
            return carry, carry[0]
        return lowering._scan_ahead(step, (h0[None], h0[None]), gi)

    def empty(h0):
        return lax.scan(lambda c, _: (c + 1.0, None), h0, None, length=L)[0]

    def ready(f, *a):
        return lambda: jax.block_until_ready(f(*a))

    cases = {
        "XLA: dot (16x512 @ 512x2048), 100 steps": ready(chain(False), h0, w, gi),
        "XLA: dot + gi_t, 100 steps": ready(chain(True), h0, w, gi),
        "XLA: LSTM cell alone, gates sliced in the step, 100 steps": ready(jax.jit(cell), gi, h0),
        "XLA: LSTM cell alone, gates read a step ahead, 100 steps":
            ready(jax.jit(cell_ahead), gi, h0),
        "XLA: empty scan, 100 steps": ready(jax.jit(empty), h0),
    }
    model = LSTM(I, H, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.standard_normal((L, N, I)), jnp.float32)
    graphdef, params = nnx.split(model)

    def fwd(p, x):
        return nnx.merge(graphdef, p)(x)[0]

    def grad(p, x):
        return jax.grad(lambda p: jnp.sum(fwd(p, x) ** 2))(p)

    for form in ("xla", "rewrite"):
        with lowering.forms(form):
            f, g = jax.jit(fwd), jax.jit(grad)
            jax.block_until_ready((f(params, x), g(params, x)))
        cases[f"flax_arch LSTM forward, {form} form"] = ready(f, params, x)
        cases[f"flax_arch LSTM gradient, {form} form"] = ready(g, params, x)
    return cases


def torch_cases():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H)
    x = torch.randn(L, N, I)
    h = torch.randn(N, H)
    w = torch.randn(H, G)

    def fwd(mkldnn):
        def run():
            with torch.backends.mkldnn.flags(enabled=mkldnn), torch.no_grad():
                lstm(x)
        return run

    def train(mkldnn):
        def run():
            with torch.backends.mkldnn.flags(enabled=mkldnn):
                y, _ = lstm(x)
                y.pow(2).sum().backward()
        return run

    def mm():
        for _ in range(L):
            h @ w

    return {"torch: h @ w_hh, 100 times": mm,
            "torch LSTM forward (oneDNN)": fwd(True),
            "torch LSTM forward + backward (oneDNN)": train(True),
            "torch LSTM forward, oneDNN off": fwd(False),
            "torch LSTM forward + backward, oneDNN off": train(False)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    with torch.profiler.profile() as prof:
        lstm = torch.nn.LSTM(I, H)
        with torch.no_grad():
            lstm(torch.randn(L, N, I))
    ops = sorted({e.key for e in prof.key_averages() if "rnn" in e.key or "lstm" in e.key})
    results = measure({**jax_cases(), **torch_cases()}, args.rounds)
    info = detect()
    device = f"{info.name} ({info.slug}), {torch.get_num_threads()} torch threads"
    lines = [f"# LSTM({I}, {H}) on {L} steps x batch {N}, float32: where the time goes",
             "", f"Device: {device}. jax {jax.__version__}, torch {torch.__version__}. "
             f"torch.backends.mkldnn available: {torch.backends.mkldnn.is_available()}; "
             f"torch's LSTM ops in its profiler: {', '.join(ops)}.", "",
             "| case | min ms | median ms |", "|---|---:|---:|"]
    lines += [f"| {k} | {lo:.2f} | {med:.2f} |" for k, (lo, med) in results.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    out = results_dir(args.out) / f"recurrent_profile_{info.slug}.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
