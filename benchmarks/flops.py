"""FLOPs per call: XLA's cost analysis, and a jaxpr count for programs with loops.

XLA's cost analysis (``compiled.cost_analysis()['flops']``) counts every HLO instruction, but
a ``while`` loop's body only once, whatever its trip count: a ``lax.scan`` over 100 steps is
undercounted 100 times. :func:`jaxpr_flops` counts the matrix products and convolutions of
the traced program as XLA counts them (2 x multiply-adds, padding and input-dilation zeros
left out; elementwise work left out, as ``torch.utils.flop_counter`` leaves it out), a
``scan`` body times its length. On GPU the cost
analysis does not see the cuBLAS/cuDNN calls that do the products at all. :func:`per_call`
takes XLA's count unless it falls far below the jaxpr's, which it then uses.
"""

from __future__ import annotations

import math

import numpy as np

from jax.extend.core import ClosedJaxpr, Jaxpr

__all__ = ["xla_flops", "jaxpr_flops", "per_call"]


def per_call(xla: float | None, jaxpr: float | None) -> tuple[float | None, str]:
    """The FLOPs per call for the roofline, and where they come from.

    XLA's count (which includes elementwise work), unless it is below half the jaxpr's count
    of the products alone: then XLA's misses work (a loop body counted once, or, on GPU,
    cuBLAS/cuDNN calls the cost analysis does not see), and the jaxpr count is used. The two
    counts of one program otherwise agree to some 10%: XLA rewrites a few convolutions.
    """
    if jaxpr and (xla is None or xla < 0.5 * jaxpr):
        return jaxpr, ("jaxpr matmul/conv count (XLA's cost analysis counts less: loop bodies "
                       "once, library calls not at all)")
    return xla, "XLA cost analysis"


def xla_flops(compiled) -> float | None:
    """``flops`` from the compiled executable's cost analysis (None when it reports none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def _eqn_flops(eqn) -> float:
    name = eqn.primitive.name
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        k = math.prod(lhs[i] for i in lhs_contract)
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
    if name == "conv_general_dilated":
        return _conv_flops(eqn)
    return 0.0


def _conv_flops(eqn) -> float:
    """2 x the multiply-adds that meet an input element: the zeros of padding and of input
    dilation (a transposed convolution's) are not counted, as XLA does not count them."""
    p = eqn.params
    dn = p["dimension_numbers"]  # specs: (batch or out, feature or in, *spatial)
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    taps = 1
    for d, (li, ri, oi) in enumerate(zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:])):
        o = np.arange(out[oi])[:, None]
        k = np.arange(rhs[ri])[None, :]
        pos = o * p["window_strides"][d] + k * p["rhs_dilation"][d] - p["padding"][d][0]
        dil = p["lhs_dilation"][d]
        taps *= int(np.sum((pos >= 0) & (pos <= (lhs[li] - 1) * dil) & (pos % dil == 0)))
    return 2.0 * out[dn.out_spec[0]] * out[dn.out_spec[1]] * rhs[dn.rhs_spec[1]] * taps


def _sub_jaxprs(value):
    if isinstance(value, ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr: Jaxpr | ClosedJaxpr) -> float:
    """Matmul and convolution FLOPs of one run of ``jaxpr``: a scan's body times its length,
    the costliest branch of a ``cond``, a ``while`` body once (its trip count is not
    static)."""
    if isinstance(jaxpr, ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = 0.0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        if eqn.primitive.name == "cond":
            total += max((jaxpr_flops(b) for b in eqn.params["branches"]), default=0.0)
            continue
        inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
        total += inner * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
    return total
