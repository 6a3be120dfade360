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
    problems += _writes_through_views(graph)
    return _Program(steps, shapes, out_spec), problems, constants


# ops whose result may share its input's memory (torch's views; reshape and flatten where
# they can, getitem of a tensor by basic indexing or of a tuple of views)
_VIEWS = {"view", "view_as", "reshape", "reshape_as", "_unsafe_view", "flatten", "transpose",
          "permute", "t", "unsqueeze", "squeeze", "expand", "expand_as", "narrow", "select",
          "slice", "diagonal", "as_strided", "unfold", "alias", "chunk", "split", "unbind",
          "split_with_sizes", "movedim", "swapaxes", "getitem", "detach"}


def _writes_through_views(graph) -> list:
    """In-place writes that torch makes through a view to the tensor it views (ConViT's
    ``rel_indices[:, :, :, 2] = ...``, a ``copy_`` into a ``select`` of a ``zeros``): the
    port's values are JAX arrays, which alias nothing, so that a later read of the viewed
    tensor would miss the write. Refused where the viewed tensor (or another view of it) is
    read after the write; a write whose view is the only reader afterwards is exact."""
    import torch.fx as fx

    def name_of(node) -> str:
        t = node.target
        if isinstance(t, str):
            return t
        if _is_aten(t):
            return t._opname
        return getattr(t, "__name__", "")

    base, problems = {}, []
    nodes = list(graph.nodes)
    position = {node.name: i for i, node in enumerate(nodes)}
    for node in nodes:
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        view = node.op in ("call_method", "call_function") and name_of(node) in _VIEWS
        if view and name_of(node) == "getitem":  # of a tensor by basic indexing, or of a
            index = node.args[1]                 # tuple of views; not of another tuple
            basic = not isinstance(index, (int, fx.Node)) and not any(
                isinstance(i, fx.Node) for i in (index if isinstance(index, tuple) else ()))
            view = basic or (first is not None and name_of(first) in (
                "chunk", "split", "unbind", "split_with_sizes"))
        base[node.name] = base[first.name] if view and first is not None else node.name
    for i, node in enumerate(nodes):
        if node.op not in ("call_method", "call_function") or not node.args:
            continue
        target = node.args[0]
        name = name_of(node)
        inplace = ((name.endswith("_") and not name.endswith("__"))
                   or name in ("iadd", "isub", "imul", "itruediv")
                   or node.kwargs.get("inplace") is True)
        if not (inplace and isinstance(target, fx.Node) and base[target.name] != target.name):
            continue
        viewed = base[target.name]
        for later in nodes[i + 1:]:
            reads = [a for a in later.all_input_nodes  # values from before the write
                     if a is not target and position[a.name] < i and base[a.name] == viewed]
            if reads:
                problems.append((f"an in-place {name} into a view of "
                                 f"'{viewed}'", _where(node),
                                 f"torch writes through the view into '{viewed}', which "
                                 f"node '{later.name}' reads after; the port's arrays do "
                                 "not alias"))
                break
    return problems


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

