"""A traced fx graph translated into a :class:`_Program`: one step per node, every call bound
to its JAX translation, and everything the port cannot translate collected (with its node)
before anything is built."""

from __future__ import annotations

import inspect
import operator

import jax.numpy as jnp
import numpy as np

from .leaves import _LEAF_LAYOUTS, _leaf_spec
from .ops import FUNCTIONS, INPLACE_OPERATORS, function_table, method, public_name


class _Ref:
    """A reference to an earlier graph node's value."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Step:
    """One graph node: ``op`` is placeholder, get_attr, call (a function or a method, ``fn``
    its implementation), call_module or output."""

    __slots__ = ("op", "name", "fn", "args", "kwargs", "target", "layout", "inplace")

    def __init__(self, op, name, *, fn=None, args=(), kwargs=None, target=None, layout=None,
                 inplace=False):
        self.op, self.name, self.fn, self.args = op, name, fn, args
        self.kwargs, self.target, self.layout, self.inplace = kwargs or {}, target, layout, inplace


class _Program:
    """One traced graph, translated (hashed by identity: static data of the NNX module).
    ``shapes``: the torch shapes of the inputs it was traced for where its forward read them
    (None: any shapes); ``out_spec``: the structure of torch.export's flat outputs."""

    def __init__(self, steps, shapes=None, out_spec=None):
        self.steps, self.shapes, self.out_spec = tuple(steps), shapes, out_spec




def _static(a):
    """A node argument as the program keeps it: nodes as references, torch dtypes as NumPy
    dtypes, devices and memory formats dropped."""
    import torch
    import torch.fx as fx

    if isinstance(a, fx.Node):
        return _Ref(a.name)
    if isinstance(a, torch.dtype):
        return np.dtype(jnp.dtype(str(a).removeprefix("torch.")))
    if isinstance(a, (torch.device, torch.memory_format, torch.layout)):
        return None
    if isinstance(a, torch.Size):
        return tuple(a)
    if isinstance(a, (tuple, list)):
        return type(a)(_static(x) for x in a)
    if isinstance(a, dict):
        return {k: _static(v) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_static(a.start), _static(a.stop), _static(a.step))
    return a


def _where(node) -> str:
    stack = node.meta.get("nn_module_stack")
    return f"node '{node.name}'" + (f" in module '{next(reversed(stack))}'" if stack else "")


def _constant(module, target: str, lifted: dict):
    """The tensor that a get_attr node reads where it is no parameter or buffer: one that fx
    lifted into the graph, or a plain tensor attribute of the module or of a submodule (None
    for a parameter or buffer, which the port holds as the state_dict holds it)."""
    if target in lifted:
        return lifted[target]
    owner, _, name = target.rpartition(".")
    m = module.get_submodule(owner)
    return None if name in m._parameters or name in m._buffers else getattr(m, name)


def _translate(graph, module, lifted: dict, shapes, out_spec=None):
    """The graph as a :class:`_Program`, what it cannot translate (``(op, node, why)``), and
    the tensors it reads that are no parameter or buffer (``lifted``: those fx made; the
    others are the module's plain tensor attributes).
    ``shapes``: the input shapes the graph was traced for, where it holds them."""
    table, _ = function_table()
    steps, problems, constants = [], [], {}
    for node in graph.nodes:
        args, kwargs = _static(node.args), _static(node.kwargs)
        if node.op in ("placeholder", "output"):
            steps.append(_Step(node.op, node.name, args=args))
        elif node.op == "get_attr":
            try:
                constant = _constant(module, node.target, lifted)
            except AttributeError:  # a submodule of torch.export's own graph
                problems.append((f"attribute {node.target!r}", _where(node),
                                 "the body of a higher-order op of torch.export's graph "
                                 "(autocast, a condition, a loop), which the port does not "
                                 "inline"))
                constant = None
            if constant is not None:
                constants[node.target] = constant
            steps.append(_Step("get_attr", node.name, target=node.target))
        elif node.op == "call_module":
            m = module.get_submodule(node.target)
            why = _leaf_spec(m)[1]
            if why:
                problems.append((f"torch.nn.{type(m).__name__}", _where(node), why))
            steps.append(_Step("call_module", node.name, args=args, kwargs=kwargs,
                               target=node.target, layout=_LEAF_LAYOUTS.get(type(m).__name__),
                               inplace=getattr(m, "inplace", False) is True))
        else:
            if node.op == "call_method":
                fn, public = method(node.target), f"torch.Tensor.{node.target}"
                inplace = node.target.endswith("_") and not node.target.endswith("__")
            else:
                if _is_aten(node.target):
                    fn, public = _aten(node.target), f"aten.{node.target._opname}." \
                        f"{node.target._overloadname}"
                else:
                    fn, public = table.get(node.target), public_name(node.target)
                if fn is None and isinstance(node.target, type) and hasattr(node.target,
                                                                            "_fields"):
                    fn = node.target  # a namedtuple of outputs (torchvision's GoogLeNet)
                inplace = node.target in {getattr(operator, i) for i in INPLACE_OPERATORS} or (
                    _is_aten(node.target) and node.target._opname.endswith("_"))
            why = None if fn is not None else "no JAX translation"
            if fn is not None and hasattr(fn, "check"):
                try:
                    why = fn.check(inspect.signature(fn).bind(*args, **kwargs).arguments)
                except TypeError as err:
                    why = f"arguments not understood ({err})"
            if why:
                problems.append((public, _where(node), why))
            steps.append(_Step("call", node.name, fn=fn, args=args, kwargs=kwargs,
                               inplace=inplace or kwargs.get("inplace") is True))
    return _Program(steps, shapes, out_spec), problems, constants


def _is_aten(target) -> bool:
    return type(target).__name__ == "OpOverload" and target.namespace == "aten"


def _aten(target):
    """An ATen op (torch.export's graph): its own translation (``aten.embedding``: other
    argument order than F.embedding), or the torch function or Tensor method of its name,
    which takes the same arguments (``aten.add.Tensor`` as ``torch.add``)."""
    name = target._opname
    in_place = name.endswith("_") and not name.endswith("__")
    base = name[:-1] if in_place else name
    return FUNCTIONS.get(f"aten.{base}") or method(base)

