"""The op translations by family, registered by torch name (:mod:`.registry`)."""

from . import losses, nn, pointwise, recurrent, reduce, shape  # noqa: F401 - registering
from .registry import INPLACE_OPERATORS, function_table, method, public_name

__all__ = ["INPLACE_OPERATORS", "function_table", "method", "public_name"]
