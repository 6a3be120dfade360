"""Tracing: the module's torch.fx graph, with the torch.nn leaf layers kept as calls; where a
forward reads its inputs' shapes, a tracer that runs the example inputs alongside."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import warnings

import numpy as np

from .leaves import _is_leaf
from .tensor import PortError


def _tracers():
    """fx's tracer with the port's leaves, and one whose shape queries answer with the
    example inputs' sizes (for a forward that checks its input's shape: torch.export
    specialises on static shapes the same way)."""
    import torch
    import torch.fx as fx

    class Tracer(fx.Tracer):
        # buffers as graph reads, as parameters are: with fx's default a buffer is the real
        # tensor while tracing, and an in-place update in the forward (timm's BatchNormAct2d:
        # ``self.num_batches_tracked.add_(1)``) ran once on the module at port time and never
        # in the ported program
        proxy_buffer_attributes = True

        def is_leaf_module(self, m, qualname):
            return _is_leaf(m)

    class ShapeProxy(fx.Proxy):
        def size(self, dim=None):
            value = self.node.meta["value"]
            return value.size() if dim is None else value.size(dim)

        def dim(self):
            return self.node.meta["value"].dim()

        def numel(self):
            return self.node.meta["value"].numel()

        shape = property(lambda self: self.node.meta["value"].shape)
        ndim = property(lambda self: self.node.meta["value"].ndim)

        def __len__(self):
            return len(self.node.meta["value"])

        def __iter__(self):  # a tuple-valued node (chunk, split) unpacks to its length
            value = self.node.meta["value"]
            if isinstance(value, (tuple, list)):
                return iter([self[i] for i in range(len(value))])
            return super().__iter__()

    class ShapeTracer(Tracer):
        """Runs the module on the example inputs while tracing, node by node (with fx's
        patches of Module.__call__ and __getattr__ bypassed while it does)."""

        def __init__(self, arguments):
            super().__init__()
            self.arguments, self.eager = iter(arguments), False

        def proxy(self, node):
            return ShapeProxy(node, self)

        def to_bool(self, obj):
            """Control flow on what the example inputs fix (a shape, ``is_nested``, a flag)
            follows them, as torch.export specialises; on a tensor's values it stays fx's
            error (another input could take the other branch)."""
            value = obj.node.meta["value"]
            if isinstance(value, torch.Tensor):
                return super().to_bool(obj)
            return bool(value)

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            if self.eager:
                return attr_val
            return super().getattr(attr, attr_val, parameter_proxy_cache)

        def call_module(self, m, forward, args, kwargs):
            if self.eager:
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

        def create_proxy(self, kind, target, args, kwargs, *rest, **kw):
            proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
            node = proxy.node
            a, k = fx.node.map_arg((node.args, node.kwargs), lambda n: n.meta["value"])
            self.eager = True
            try:
                if kind == "placeholder":
                    value = next(self.arguments)
                elif kind == "get_attr":
                    value = functools.reduce(getattr, target.split("."), self.root)
                elif kind == "call_function":
                    value = target(*a, **k)
                elif kind == "call_method":
                    value = getattr(a[0], target)(*a[1:], **k)
                elif kind == "call_module":
                    value = self.root.get_submodule(target)(*a, **k)
                else:
                    value = None
            finally:
                self.eager = False
            node.meta["value"] = value
            return proxy

    return Tracer, ShapeTracer


def _trace(module, example_inputs):
    """The module's fx graph (the forward's arguments after the example inputs at their
    defaults), the tensors fx lifted into it, and the example inputs' shapes where the graph
    holds them (None: the graph works for any shape)."""

    import torch

    Tracer, ShapeTracer = _tracers()
    concrete = {}
    params = list(inspect.signature(module.forward).parameters.values())
    for p, x in zip(params, example_inputs):  # None, a flag, a number: fixed in the graph
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and (
                x is None or isinstance(x, (bool, int, float, str))):
            concrete[p.name] = x
    for p in params[len(example_inputs):]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise PortError(f"port: {type(module).__name__}.forward needs argument "
                            f"{p.name!r}; give an example input for it")
        concrete[p.name] = p.default
    before = set(vars(module))
    shapes = None
    try:
        try:
            graph = Tracer().trace(module, concrete_args=concrete or None)
        except Exception as err:  # noqa: BLE001 - fx raises several types for control flow
            inputs = [x.detach().clone() if hasattr(x, "detach") else
                      torch.as_tensor(np.asarray(x)) if hasattr(x, "ndim") else x
                      for x in example_inputs]
            saved = copy.deepcopy(module.state_dict())
            try:
                with torch.no_grad(), torch.random.fork_rng(), _tracing_patches():
                    defaults = [concrete[p.name] for p in params[len(inputs):]
                                if p.name in concrete]
                    graph = ShapeTracer([*inputs, *defaults]).trace(
                        module, concrete_args=concrete or None)
            except Exception as again:  # noqa: BLE001 - data-dependent control flow
                try:
                    return _export(module, inputs)
                except Exception as last:  # noqa: BLE001 - torch.export's own errors
                    raise PortError(
                        f"port: torch.fx cannot trace {type(module).__name__}: {err}"
                        + (f" (and with the example's shapes: {again})"
                           if str(again) != str(err) else "")
                        + f"; torch.export neither: {str(last).splitlines()[0][:300]}") from err
            finally:  # the eager run may have updated running statistics
                module.load_state_dict(saved)
            shapes = tuple(tuple(x.shape) if hasattr(x, "shape") else None for x in inputs)
            # the queries that only steered the forward's control flow (``x.is_nested``,
            # ``x.dim() == 3``) were answered while tracing: dropped where nothing reads them
            graph.eliminate_dead_code(is_impure_node=_keeps)
    finally:  # fx leaves the tensor constants it lifts on the module: take them back
        added = {name: vars(module)[name] for name in set(vars(module)) - before}
        for name in added:
            delattr(module, name)
    return graph, added, shapes, None


def _keeps(node) -> bool:
    """A node that dead-code elimination keeps though nothing reads it: a module call, or
    one that writes in place (``add_``, ``operator.iadd``, ``inplace=True``)."""
    import operator

    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return (node.op in ("placeholder", "output", "call_module")
            or (name.endswith("_") and not name.endswith("__"))
            or node.kwargs.get("inplace") is True
            or node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv))


@contextlib.contextmanager
def _tracing_patches():
    """Two of torch.nn's helpers answer for a traced value while the shape tracer runs:
    ``F._none_or_dtype`` (nn.MultiheadAttention asks it of its mask) with the example's
    dtype, as for a tensor; and the Transformer's ``_detect_is_causal_mask``, which compares
    the mask's values with a causal one only to set a hint (``is_causal``: torch uses the
    mask either way), with the hint as given."""
    import torch.fx as fx
    import torch.nn.functional as F
    from torch.nn.modules import transformer

    none_or_dtype, detect = F._none_or_dtype, transformer._detect_is_causal_mask

    def proxy_dtype(value):
        if isinstance(value, fx.Proxy) and "value" in value.node.meta:
            return value.node.meta["value"].dtype
        return none_or_dtype(value)

    def given_hint(mask, is_causal=None, size=None):
        return bool(is_causal)

    F._none_or_dtype, transformer._detect_is_causal_mask = proxy_dtype, given_hint
    try:
        yield
    finally:
        F._none_or_dtype, transformer._detect_is_causal_mask = none_or_dtype, detect


def _export(module, inputs):
    """torch.export's graph of ATen ops, where fx cannot trace (Hugging Face models): its
    parameter and buffer inputs become reads of the module's attributes of torch's names,
    its lifted constants reads of its own; shapes fixed at the example's, as export fixes
    them; the outputs' structure kept (``out_spec``)."""
    import torch

    saved = copy.deepcopy(module.state_dict())
    try:
        ep = torch.export.export(module, tuple(inputs), strict=False)
    finally:
        module.load_state_dict(saved)
    gm = ep.graph_module
    graph = gm.graph
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    lifted = {}
    for node in list(graph.nodes):
        if node.op != "placeholder":
            continue
        if node.name in names:
            target = names[node.name]
        elif node.name in sig.inputs_to_lifted_tensor_constants:
            target = f"_export_constant_{len(lifted)}"
            lifted[target] = ep.constants[sig.inputs_to_lifted_tensor_constants[node.name]]
        else:
            continue
        # the export's graph module has no submodules or parameters: fx warns that a read
        # has no owner there, which the port resolves on the torch module instead
        with graph.inserting_before(node), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Failed to fetch module|Attempted to insert a "
                                    "get_attr")
            read = graph.get_attr(target)
        node.replace_all_uses_with(read)
        graph.erase_node(node)
    shapes = tuple(tuple(x.shape) if hasattr(x, "shape") else None for x in inputs)
    return graph, lifted, shapes, ep.call_spec.out_spec

