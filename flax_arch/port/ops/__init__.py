"""The op translations by family, registered by torch name (:mod:`.registry`)."""

from . import (  # noqa: F401 - each registers its ops
    aten, attention, losses, nn, pointwise, recurrent, reduce, shape)
from .registry import FUNCTIONS, INPLACE_OPERATORS, function_table, method, public_name

__all__ = ["FUNCTIONS", "INPLACE_OPERATORS", "function_table", "method", "public_name"]
