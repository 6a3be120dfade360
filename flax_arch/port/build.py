"""``port``: trace (:mod:`.tracing`), translate (:mod:`.translate`), build the NNX tree
(:mod:`.program`) and load the torch weights into it."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_arch.interop import _to_numpy, load_torch_state_dict

from .leaves import (_CHANNELS_LAST, _LEAF_LAYOUTS, _flax_class, _in_torch_layout, _is_leaf,
                     _leaf_spec)
from .program import Ported, _fill
from .tensor import PortError
from .tracing import _trace
from .translate import _translate


def port(module, *example_inputs, rngs: nnx.Rngs | None = None,
         channels_last: bool = True) -> nnx.Module:
    """Rebuilds the torch module ``module`` as an NNX module with the same state tree.

    ``example_inputs`` are the forward's first arguments (torch tensors or arrays, torch's
    layout); later arguments keep their defaults. The result's state is
    ``module.state_dict()`` under the same names: :func:`flax_arch.torch_state_dict` gives it
    back bit for bit, and :func:`flax_arch.load_torch_state_dict` loads into it. Call it with
    the same inputs, rank >= 3 tensors channels-last, (N, L, C) and (N, H, W, C) (torch's
    layout with ``channels_last=False``); its outputs follow the same convention. It starts
    in the module's mode; ``.train()`` and ``.eval()`` switch it as they switch torch's
    module, branches on ``self.training`` included. ``rngs`` is held as ``nnx.Dropout``
    holds its own: dropout and stochastic depth draw from it in train mode, unless a call
    gives its own ``rngs``.

    A torch.nn layer on its own ports to its flax_arch layer. Every operation and module that
    the port cannot translate is named, with its graph node, in one :class:`PortError`
    before anything is built.
    """
    _materialize(module, example_inputs)
    if _is_leaf(module):
        return _port_leaf(module, channels_last, rngs)
    modes = {name: m.training for name, m in module.named_modules()}
    programs, problems, constants = {}, {}, {}
    try:
        for training in (True, False):
            module.train(training)
            graph, lifted, shapes, out_spec = _trace(module, example_inputs)
            programs[training], found, consts = _translate(graph, module, lifted, shapes,
                                                           out_spec)
            for problem in found:
                problems.setdefault(problem, []).append("train" if training else "eval")
            constants.update(consts)
    finally:
        for name, m in module.named_modules():
            m.training = modes[name]
    if problems:
        lines = [f"{op} at {where} ({' and '.join(ms)} mode): {why}"
                 for (op, where, why), ms in problems.items()]
        raise PortError(f"port cannot translate {len(lines)} operation(s) of "
                        f"{type(module).__name__}; nothing was built:\n  " + "\n  ".join(lines))
    called = {s.target for p in programs.values() for s in p.steps if s.op == "call_module"}
    root = _fill(Ported(programs[True], programs[False], channels_last, module.training, rngs),
                 module, called)
    for path, tensor in constants.items():  # not in the state_dict: plain Variables
        *parent, name = path.split(".")
        setattr(functools.reduce(getattr, parent, root), name,
                nnx.Variable(jnp.asarray(_to_numpy(tensor))))
    _load(root, module)
    root.train() if module.training else root.eval()
    return root


def _materialize(module, example_inputs) -> None:
    """A lazy module (``nn.LazyConv2d``, ...) gets its parameters from a first call on the
    example inputs, in eval mode (no running statistics move), as torch's first call would
    give them; it then is the layer it becomes (``Conv2d``)."""
    import torch

    lazy = (torch.nn.parameter.UninitializedParameter, torch.nn.parameter.UninitializedBuffer)
    if not any(isinstance(t, lazy) for t in (*module.parameters(), *module.buffers())):
        return
    modes = {name: m.training for name, m in module.named_modules()}
    module.eval()
    try:
        with torch.no_grad():
            module(*[torch.as_tensor(np.asarray(x)) if hasattr(x, "ndim") and not
                     isinstance(x, torch.Tensor) else x for x in example_inputs])
    finally:
        for name, m in module.named_modules():
            m.training = modes[name]


def _load(model: nnx.Module, module) -> None:
    """The torch weights into the model, whose leaf layers are abstract (nnx.eval_shape):
    placeholders first (NumPy zeros: no JAX computation), then every torch value."""
    for path, v in nnx.to_flat_state(nnx.state(model)):
        value = v.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            if not isinstance(v, (nnx.Param, nnx.BatchStat)):  # not in any state_dict
                raise AssertionError(f"{'.'.join(map(str, path))}: a {type(v).__name__} that "
                                     "the torch module cannot give a value")
            v.set_value(np.zeros(value.shape, value.dtype))
    load_torch_state_dict(model, module.state_dict())


def _port_leaf(module, channels_last: bool, rngs: nnx.Rngs | None):
    name = type(module).__name__
    make, why = _leaf_spec(module)
    if why:
        raise PortError(f"port cannot translate torch.nn.{name}; nothing was built: {why}")
    if not channels_last and _LEAF_LAYOUTS[name] == _CHANNELS_LAST:  # called in torch's layout
        leaf = nnx.eval_shape(lambda: make(_in_torch_layout(_flax_class(name))))
    else:
        leaf = nnx.eval_shape(make)
    _load(leaf, module)
    if rngs is not None and isinstance(leaf, nnx.Dropout):  # held as nnx.Dropout holds it
        leaf.rngs = rngs[leaf.rng_collection].fork()
    leaf.train() if module.training else leaf.eval()
    return leaf


def build_torch_module(spec: str, **kwargs):
    """The torch module that ``spec``, ``'package.module:callable'`` (a class or a builder,
    such as ``'torchvision.models:mobilenet_v2'``), builds with ``kwargs`` (the command-line
    tools' way to name a model that is not registered)."""
    import importlib

    import torch

    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr):
        raise ValueError(f"a torch model is named 'package.module:callable', got {spec!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} (from {spec!r}): {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    module = obj(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"{spec} built a {type(module).__name__}, not a torch.nn.Module")
    return module
