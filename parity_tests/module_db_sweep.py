"""Every class of torch's ``module_db`` through :func:`flax_arch.port`, reported per class.

    python -m parity_tests.module_db_sweep [--only NAME ...] [--out FILE]

For each class, each sample (constructor and forward arguments from ``module_inputs_func``)
and each mode (train, eval), in float64: the torch module is built, ported with
``channels_last=False`` (torch's layout on both sides) and compared with itself: the outputs,
the state after the call (running statistics), and the gradients of a random cotangent with
respect to every parameter, at max|diff| <= 1e-10 * max(1, max|torch|) (integer outputs
exactly). A class *matches* when every sample does; it is *refused* when ``port`` raises a
PortError (the reason is reported); *wrong* when a number differs; *crash* for any other
exception. A module that draws randomness in train mode (dropout) is compared in eval mode,
and in train mode its output's shape and the zeros it leaves are checked (``random``).
Results: ``parity_tests/module_db_sweep.md``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import inspect
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")  # as the test suite runs

from torch.testing._internal.common_modules import module_db  # noqa: E402

import flax_arch  # noqa: E402
from flax_arch.port import PortError  # noqa: E402

TOL = 1e-10


class Wrong(AssertionError):
    pass


def leaves(out) -> list:
    if isinstance(out, torch.Tensor) or hasattr(out, "ndim"):
        return [out]
    if isinstance(out, dict):
        return [t for k in out for t in leaves(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in leaves(o)]
    return []


def close(ours, ref, what: str) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        raise Wrong(f"{what}: shape {ours.shape} != torch's {ref.shape}")
    if not np.issubdtype(ref.dtype, np.floating):
        if not np.array_equal(ours, ref):
            raise Wrong(f"{what}: integers differ")
        return 0.0
    if not (np.array_equal(np.isnan(ours), np.isnan(ref))
            and np.array_equal(ours[np.isinf(ref)], ref[np.isinf(ref)])):
        raise Wrong(f"{what}: non-finite values differ")
    finite = np.isfinite(ref)
    scale = max(1.0, float(np.max(np.abs(ref[finite]), initial=0.0)))
    err = float(np.max(np.abs(ours[finite] - ref[finite]), initial=0.0)) / scale
    if not err <= TOL:
        raise Wrong(f"{what}: error {err:.2e}")
    return err


def positional(module, args, kwargs) -> list:
    """The forward's arguments as positional ones (keyword arguments in their place)."""
    if not kwargs:
        return list(args)
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.values())
    last = max(list(bound.signature.parameters).index(k) for k in kwargs)
    return values[:last + 1]


def to_jax(a):
    if isinstance(a, (tuple, list)):
        return type(a)(to_jax(x) for x in a)
    return jnp.asarray(a.detach().numpy()) if isinstance(a, torch.Tensor) else a


def clone(a, grad: bool = False):
    if isinstance(a, (tuple, list)):
        return type(a)(clone(x, grad) for x in a)
    if isinstance(a, torch.Tensor):
        return a.detach().clone().requires_grad_(grad and a.is_floating_point())
    return a


def check(info, sample, training: bool) -> tuple[str, float]:
    """One sample in one mode -> ('match' | 'random', largest error)."""
    c = sample.constructor_input
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = info.module_cls(*c.args, **c.kwargs).to(torch.float64)
    module.train(training)
    with torch.no_grad():  # no parameter at a special value (norms start at ones and zeros)
        gen = torch.Generator().manual_seed(0)
        for p in module.parameters():
            if not isinstance(p, torch.nn.parameter.UninitializedParameter):
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    inputs = positional(module, sample.forward_input.args, sample.forward_input.kwargs)
    inputs = [clone(x) for x in inputs]
    ported = flax_arch.port(module, *inputs, channels_last=False, rngs=nnx.Rngs(0))
    # after the port: a lazy module's parameters exist only after its first call
    before = copy.deepcopy(module.state_dict())
    with torch.no_grad():  # the same parameters as the port's
        for k, v in flax_arch.torch_state_dict(ported).items():
            before[k].copy_(torch.from_numpy(np.asarray(v)))
    module.load_state_dict(before)

    # gradients of the parameters and of the first input (losses are differentiable in it)
    t_in = [clone(x, grad=(k == 0)) for k, x in enumerate(inputs)]
    torch.manual_seed(1)
    t_out = module(*t_in)
    t_leaves = leaves(t_out)
    torch.manual_seed(2)
    module2 = copy.deepcopy(module)
    module2.load_state_dict(before)
    t_again = leaves(module2(*[clone(x) for x in inputs]))
    random = any(not torch.equal(a.detach(), b.detach()) for a, b in zip(t_leaves, t_again)
                 if not a.detach().isnan().any())

    j_in = [to_jax(x) for x in inputs]
    rng = np.random.default_rng(1)
    floats = [k for k, t in enumerate(t_leaves) if t.dtype.is_floating_point]
    cots = [rng.standard_normal(tuple(t_leaves[k].shape)) for k in floats]

    def loss(model, x0):
        out = leaves(model(x0, *j_in[1:]))
        return sum(jnp.sum(out[k] * g) for k, g in zip(floats, cots)), out

    graphdef, state = nnx.split(ported)
    model = nnx.merge(graphdef, state)
    if hasattr(j_in[0], "dtype") and jnp.issubdtype(j_in[0].dtype, jnp.floating):
        (grads, x0_grad), f_out = nnx.grad(loss, argnums=(0, 1), has_aux=True)(model, j_in[0])
    else:
        grads, f_out = nnx.grad(loss, has_aux=True)(model, j_in[0])
    if len(f_out) != len(t_leaves):
        raise Wrong(f"{len(f_out)} outputs, torch has {len(t_leaves)}")
    err = 0.0
    if random:
        for k, (ours, ref) in enumerate(zip(f_out, t_leaves)):
            if tuple(ours.shape) != tuple(ref.shape):
                raise Wrong(f"output {k}: shape {ours.shape} != torch's {tuple(ref.shape)}")
        return "random", err
    for k, (ours, ref) in enumerate(zip(f_out, t_leaves)):
        err = max(err, close(ours, ref.detach().numpy(), f"output {k}"))
    ours, ref = flax_arch.torch_state_dict(model), module.state_dict()
    if set(ours) != set(ref):
        raise Wrong(f"state keys differ: {sorted(set(ours) ^ set(ref))}")
    for key, value in ref.items():
        err = max(err, close(ours[key], value.numpy(), f"state {key} after the call"))
    params = dict(module.named_parameters())
    wrt = list(params.values())
    x0 = t_in[0] if isinstance(t_in[0], torch.Tensor) and t_in[0].requires_grad else None
    if x0 is not None:
        wrt.append(x0)
    if wrt and cots and any(t_leaves[k].requires_grad for k in floats):
        t_loss = sum((t_leaves[k] * torch.from_numpy(g)).sum() for k, g in zip(floats, cots))
        t_grads = torch.autograd.grad(t_loss, wrt, allow_unused=True)
        f_grads = flax_arch.torch_state_dict(model, nnx.state(grads, nnx.Param))
        for (key, p), g in zip(params.items(), t_grads):
            g = np.zeros(tuple(p.shape)) if g is None else g.numpy()
            err = max(err, close(f_grads[key], g, f"grad {key}"))
        if x0 is not None:
            g = t_grads[-1]
            g = np.zeros(tuple(x0.shape)) if g is None else g.numpy()
            err = max(err, close(x0_grad, g, "grad input 0"))
    return "match", err


def sweep(only=()) -> dict:
    results = {}
    for info in module_db:
        name = info.module_cls.__name__
        if only and name not in only:
            continue
        start, outcome, detail, worst, n = time.perf_counter(), "match", "", 0.0, 0
        for training in (True, False):
            try:
                samples = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                                  requires_grad=False, training=training)
            except Exception as err:  # noqa: BLE001
                outcome, detail = "crash", f"module_inputs_func: {err}"
                break
            for i, sample in enumerate(samples):
                where = f"sample {i} ({sample.desc or 'default'}), {'train' if training else 'eval'}"
                n += 1
                try:
                    kind, err = check(info, sample, training)
                    worst = max(worst, err)
                    if kind == "random" and outcome == "match":
                        outcome = "match (random in train mode: shapes)"
                except PortError as err:
                    outcome, detail = "refused", f"{where}: {str(err).splitlines()[-1].strip()}"
                except Wrong as err:
                    outcome, detail = "WRONG", f"{where}: {err}"
                except Exception as err:  # noqa: BLE001
                    outcome = "CRASH"
                    detail = f"{where}: {type(err).__name__}: {str(err)[:200]}"
                    detail += " @ " + traceback.format_exc().strip().splitlines()[-3].strip()
                if outcome not in ("match", "match (random in train mode: shapes)"):
                    break
            if outcome not in ("match", "match (random in train mode: shapes)"):
                break
        results[name] = (outcome, n, worst, detail, time.perf_counter() - start)
        print(f"{name:28s} {outcome:10s} {n:3d} samples  {worst:.1e}  "
              f"{time.perf_counter() - start:5.1f}s  {detail}", flush=True)
    return results


def report(results: dict) -> str:
    counts = collections.Counter(r[0].split(" ")[0] for r in results.values())
    lines = ["# module_db through flax_arch.port", "",
             f"torch {torch.__version__}, jax {jax.__version__}; float64, tolerance {TOL:.0e} "
             "relative to max(1, max|torch|); `python -m parity_tests.module_db_sweep`.", "",
             f"{len(results)} classes: " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(counts.items())), "",
             "| class | outcome | samples x modes | largest error | seconds | detail |",
             "|---|---|---|---|---|---|"]
    for name, (outcome, n, worst, detail, secs) in sorted(results.items()):
        lines.append(f"| {name} | {outcome} | {n} | {worst:.1e} | {secs:.1f} | "
                     f"{detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=())
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    results = sweep(set(args.only))
    text = report(results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
