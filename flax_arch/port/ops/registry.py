"""The table of op translations: one function per torch op, registered under its torch name.

Each translation takes the graph's arguments as they are held (tensors as
:class:`~flax_arch.port.tensor._T`, everything else as the Python value) and returns the same
kind of value. ``@op("cat", "concat")`` registers one under ``torch.cat``,
``torch.nn.functional.cat``, ``Tensor.cat`` (and their in-place ``cat_``) where torch has
them; ``method_only=True`` registers a Tensor method that has no function of that name.
``check`` (the bound arguments -> why the port refuses them, or None) runs when the graph is
translated; ``random=True`` marks an op that draws from the ported model's ``rngs``;
``writes=True`` one that updates some of its arguments in place (F.batch_norm's running
statistics): it returns ``(result, {argument index: new value})``.
"""

from __future__ import annotations

import functools
import operator
import sys

FUNCTIONS: dict = {}  # by name: torch.X, torch.nn.functional.X, Tensor.X
METHODS: dict = {}  # Tensor methods without a function of the same name
INPLACE_OPERATORS = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv"}


def op(*names: str, method_only: bool = False, check=None, random: bool = False,
       writes: bool = False):
    """Registers the decorated translation under the torch names ``names``."""
    table = METHODS if method_only else FUNCTIONS

    def register(fn):
        if check is not None:
            fn.check = check
        if random:
            fn.random = True
        if writes:
            fn.writes = True
        for name in names:
            if name in FUNCTIONS or name in METHODS:
                raise ValueError(f"two translations of {name!r}")
            table[name] = fn
        return fn

    return register


@functools.lru_cache(maxsize=1)
def function_table():
    """fx call_function targets -> implementations, and the public name of every function
    in torch's public namespaces (error messages print ``torch.fft.rfft``, not
    ``torch._C._fft.fft_rfft``)."""
    import torch
    import torch.fx._symbolic_trace as fx_trace
    import torch.nn.functional as F

    from .shape import _assert, _getattr

    namespaces = [("torch.nn.functional", F), ("torch.fft", torch.fft),
                  ("torch.linalg", torch.linalg), ("torch.special", torch.special),
                  ("torch", torch), ("operator", operator)]
    if "torchvision" in sys.modules:
        namespaces.insert(0, ("torchvision.ops", sys.modules["torchvision"].ops))
    public = {}
    for prefix, ns in reversed(namespaces):  # the first namespace wins
        for attr in dir(ns):
            if not attr.startswith("_"):
                public[id(getattr(ns, attr, None))] = f"{prefix}.{attr}"
    table = {getattr: _getattr, torch._assert: _assert, fx_trace._assert_is_none: _assert}
    for iname, name in INPLACE_OPERATORS.items():
        table[getattr(operator, iname)] = FUNCTIONS[name]
    # torch.embedding(weight, indices) and torch.batch_norm(x, weight, bias, mean, var, ...)
    # are not F's order (ATen's instead); operator.concat joins lists
    skip = {id(torch): {"embedding", "batch_norm"}, id(operator): {"concat"}}
    table[torch.batch_norm] = FUNCTIONS["aten.batch_norm"]
    for name, impl in FUNCTIONS.items():
        for ns in (F, torch, operator, *([sys.modules["torchvision"].ops]
                                         if "torchvision" in sys.modules else [])):
            fn = getattr(ns, name, None)
            if callable(fn) and name not in skip.get(id(ns), ()):
                table.setdefault(fn, impl)
    return table, public


def method(name: str):
    """The translation of ``Tensor.<name>`` (an in-place ``name_`` as ``name``), or None."""
    base = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    return METHODS.get(base) or FUNCTIONS.get(base)


def public_name(target) -> str:
    _, public = function_table()
    if id(target) in public:
        return public[id(target)]
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    return f"{module}.{name}" if module else name
