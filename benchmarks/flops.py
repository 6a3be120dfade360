"""FLOPs per call: XLA's cost analysis, and a jaxpr count for programs with loops.

XLA's cost analysis (``compiled.cost_analysis()['flops']``) counts every HLO instruction, but
a ``while`` loop's body only once, whatever its trip count: a ``lax.scan`` over 100 steps is
undercounted 100 times. :func:`jaxpr_flops` counts the matrix products and convolutions of
the traced program (2 x multiply-adds; elementwise work left out, as
``torch.utils.flop_counter`` leaves it out), a ``scan`` body times its length; where that
differs from the count with every loop body once, loops carry the work and the jaxpr count is
the one to use.
"""

from __future__ import annotations

import math

from jax.extend.core import ClosedJaxpr, Jaxpr

__all__ = ["xla_flops", "jaxpr_flops"]


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
        rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial)
        rhs = eqn.invars[1].aval.shape
        per_output = rhs[rhs_spec[1]] * math.prod(rhs[i] for i in rhs_spec[2:])
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
    return 0.0


def _sub_jaxprs(value):
    if isinstance(value, ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr: Jaxpr | ClosedJaxpr, *, trips: bool = True) -> float:
    """Matmul and convolution FLOPs of one run of ``jaxpr``: a scan's body times its length
    (once if not ``trips``), the costliest branch of a ``cond``, a ``while`` body once (its
    trip count is not static)."""
    if isinstance(jaxpr, ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = 0.0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        if eqn.primitive.name == "cond":
            total += max((jaxpr_flops(b, trips=trips) for b in eqn.params["branches"]),
                         default=0.0)
            continue
        inner = sum(jaxpr_flops(j, trips=trips) for v in eqn.params.values()
                    for j in _sub_jaxprs(v))
        total += inner * (eqn.params["length"] if trips and eqn.primitive.name == "scan" else 1)
    return total
