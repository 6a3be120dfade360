"""The ported modules: :class:`Ported` runs a translated program over its children, the
flax_arch leaf layers and :class:`TracedModule` nodes, which hold the torch module's
parameters and buffers under their torch names."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from flax_arch.interop import IDENTITY, _rules_for, _to_numpy
from flax_arch.nn.containers import Stochastic

from .leaves import _call_leaf, _is_leaf, _leaf_spec
from .tensor import _T, _amap, _cl, _tmap
from .translate import _Program, _Ref


def _resolve(a, env):
    if isinstance(a, _Ref):
        return env[a.name]
    if isinstance(a, (tuple, list)):
        return type(a)(_resolve(x, env) for x in a)
    if isinstance(a, dict):
        return {k: _resolve(v, env) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_resolve(a.start, env), _resolve(a.stop, env), _resolve(a.step, env))
    return a



class TracedModule(nnx.Module):
    """A torch submodule that is no torch.nn leaf: its children and its own parameters and
    buffers under their torch names (the root runs the traced graph)."""


class Ported(Stochastic):
    """A torch module rebuilt by :func:`port`. ``ported(*inputs, rngs=None)``: tensors of
    rank >= 3 channels-last in and out (torch's layout with ``channels_last=False``); the
    train-mode graph runs after ``.train()``, the eval-mode one after ``.eval()``.

    Randomness (dropout, stochastic depth, a recurrent layer's dropout in train mode) comes
    from the ``rngs`` the port was given, held as ``nnx.Dropout`` holds its own (a fork,
    advanced by every call), or from the call's ``rngs``, which wins."""

    def __init__(self, train_program: _Program, eval_program: _Program, channels_last: bool,
                 training: bool, rngs: nnx.Rngs | None):
        self._train_program, self._eval_program = train_program, eval_program
        self._channels_last = channels_last
        self.deterministic = not training  # what nnx's .train() / .eval() set
        self.rngs = rngs.fork() if rngs is not None else nnx.data(None)

    def _attr(self, path: str):
        *parent, name = path.split(".")
        owner = functools.reduce(getattr, parent, self)
        obj = getattr(owner, name)
        if isinstance(obj, nnx.Variable):  # a parameter or buffer, in torch's layout
            return _T(jnp.asarray(_rules_for(owner).get(name, IDENTITY).to_torch(obj[...])))
        return obj

    def _write(self, path: str, value: _T) -> None:
        """An in-place update of a buffer (``running_mean.mul_(...)``, F.batch_norm's running
        statistics) written back to its Variable."""
        *parent, name = path.split(".")
        owner = functools.reduce(getattr, parent, self)
        var = getattr(owner, name)
        new = _rules_for(owner).get(name, IDENTITY).from_torch(value.torch())
        var[...] = jnp.asarray(new).astype(var[...].dtype)

    def __call__(self, *inputs, rngs: nnx.Rngs | None = None):
        program = self._eval_program if self.deterministic else self._train_program
        rngs = self.rngs if rngs is None else rngs
        held = (lambda a: _T(a, _cl(a.ndim))) if self._channels_last else _T
        placeholders = [s for s in program.steps if s.op == "placeholder"]
        if len(inputs) > len(placeholders) or any(
                not s.args for s in placeholders[len(inputs):]):
            raise TypeError(f"the ported module takes {len(placeholders)} inputs (the ones "
                            f"after the example inputs keep their defaults); got {len(inputs)}")
        env = {s.name: _amap(lambda a: held(jnp.asarray(a)), x)
               for s, x in zip(placeholders, inputs)}
        if program.shapes is not None:
            got = tuple(env[s.name].shape() if isinstance(env[s.name], _T) else None
                        for s in placeholders[:len(inputs)])
            if got != program.shapes[:len(inputs)]:
                raise ValueError(
                    f"this port was traced for inputs of torch shapes {program.shapes} (its "
                    f"forward reads its inputs' shapes, so fx could only trace it at the "
                    f"example's); got {got}: port it again with examples of these shapes")
        # torch broadcasts implicitly: its ops' translations may too, whatever the caller's
        # jax_numpy_rank_promotion
        with jax.numpy_rank_promotion("allow"):
            return self._run(program, env, rngs)

    def _run(self, program: _Program, env: dict, rngs):
        attrs = {}  # the get_attr steps' names -> the attribute paths they read
        for step in program.steps:
            if step.op == "placeholder":
                if step.name not in env:
                    env[step.name] = step.args[0]
                continue
            if step.op == "get_attr":
                env[step.name] = self._attr(step.target)
                attrs[step.name] = step.target
                continue
            args, kwargs = _resolve(step.args, env), _resolve(step.kwargs, env)
            if step.op == "output":
                out = args[0] if program.out_spec is None else _unflatten(list(args[0]),
                                                                         program.out_spec)
                return _tmap(_T.cl if self._channels_last else _T.torch, out)
            if step.op == "call_module":
                out = _call_leaf(self._attr(step.target), step.layout, args, kwargs, rngs)
            else:
                if getattr(step.fn, "random", False):
                    kwargs["rngs"] = rngs
                out = step.fn(*args, **kwargs)
                if getattr(step.fn, "writes", False):  # (result, {argument index: new value})
                    out, updates = out
                    for i, value in updates.items():
                        if isinstance(step.args[i], _Ref) and step.args[i].name in attrs:
                            self._write(attrs[step.args[i].name], value)
            env[step.name] = out
            if step.inplace and step.args and isinstance(step.args[0], _Ref):
                env[step.args[0].name] = out  # later readers of the input see the update
                if step.args[0].name in attrs:
                    self._write(attrs[step.args[0].name], out)
        raise AssertionError("a graph without an output node")


def _fill(node: nnx.Module, m, called: set[str], path: str = "") -> nnx.Module:
    """Gives ``node`` the NNX twins of torch module ``m``'s children and its own parameters
    and buffers."""
    for name, child in m.named_children():
        setattr(node, name, _build(child, called, f"{path}{name}"))
    for name, p in m.named_parameters(recurse=False):
        setattr(node, name, nnx.Param(jnp.asarray(_to_numpy(p))))
    for name, b in m.named_buffers(recurse=False):
        kind = nnx.Variable if name in m._non_persistent_buffers_set else nnx.BatchStat
        setattr(node, name, kind(jnp.asarray(_to_numpy(b))))
    return node


def _build(m, called: set[str], path: str) -> nnx.Module:
    """A torch.nn leaf's flax_arch layer; for any other module (and a leaf the graph never
    calls and that has no flax_arch layer) a :class:`TracedModule` of the same tree."""
    if _is_leaf(m):
        make, why = _leaf_spec(m)
        if why is None:  # abstract: the torch weights give the values, no initialiser runs
            return nnx.eval_shape(make)
        assert path not in called, why  # refused before anything was built
    return _fill(TracedModule(), m, called, f"{path}.")


def _unflatten(leaves: list, spec):
    """torch.export's flat outputs in the forward's structure: tuples, lists and namedtuples
    as they are, dicts and dict-like outputs (a transformers ModelOutput) as dicts of their
    fields."""
    it = iter(leaves)

    def build(s):
        if s.is_leaf():
            return next(it)
        kids = s.children() if hasattr(s, "children") else s.children_specs  # older torch
        children = [build(c) for c in kids]
        if s.type in (tuple, list):
            return s.type(children)
        if isinstance(s.type, type) and issubclass(s.type, tuple) and hasattr(s.type, "_fields"):
            return s.type(*children)
        if isinstance(s.context, (list, tuple)) and len(s.context) == len(children):
            return dict(zip(s.context, children))
        return tuple(children)

    return build(spec)

