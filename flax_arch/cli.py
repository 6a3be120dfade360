"""What the command-line tools (``python -m flax_arch.train``, ``python -m flax_arch.convert``)
share: constructor arguments given on the command line, and how a user's mistake is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["USAGE_ERROR", "USER_ERRORS", "add_kwargs_option", "parse_kwargs", "report_error"]

USAGE_ERROR = 2  # the exit status of a run refused for its input, as argparse's own
# A user's mistake (a bad argument, file or checkpoint): printed as one line, not a traceback.
USER_ERRORS = (ValueError, KeyError, TypeError, OSError)


def add_kwargs_option(parser: argparse.ArgumentParser) -> None:
    """``--kwargs ARG...``: the model's constructor arguments (read by :func:`parse_kwargs`)."""
    parser.add_argument("--kwargs", nargs="+", default=[], metavar="ARG",
                        help="constructor arguments: one JSON object or KEY=VALUE items")


def parse_kwargs(tokens: Sequence[str]) -> dict[str, Any]:
    """``['{"num_classes": 10}']`` (one JSON object) or ``['num_classes=10', 'nc=1']`` (each
    value read as JSON, else kept as a string) -> a dict of constructor arguments."""
    if not tokens:
        return {}
    if len(tokens) == 1 and tokens[0].lstrip().startswith("{"):
        try:
            value = json.loads(tokens[0])
        except json.JSONDecodeError as err:
            raise ValueError(f"--kwargs is not valid JSON: {err}") from err
        if not isinstance(value, dict):
            raise ValueError("--kwargs JSON must be an object")
        return value
    out = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise ValueError(f"--kwargs items are KEY=VALUE, got {token!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def report_error(err: BaseException) -> int:
    """Prints ``error: <message>`` to stderr; returns :data:`USAGE_ERROR`, the exit status."""
    # a KeyError's str() is the repr of its message, quotes and all
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR
