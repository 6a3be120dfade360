"""PyTorch weight files to Flax checkpoints and back: ``python -m flax_arch.convert``.

::

    python -m flax_arch.convert MODEL weights.pt  ckpt_dir   [--kwargs ...] [--no-strict]
    python -m flax_arch.convert MODEL ckpt_dir    weights.safetensors
    python -m flax_arch.convert torchvision.models:mobilenet_v2 weights.pth ckpt_dir \
        [--input 1,3,224,224] [--kwargs ...]

The direction follows the source: a ``.pt``/``.pth`` file (a ``state_dict`` saved with
``torch.save``, read with ``weights_only=True``) or a ``.safetensors`` file becomes a new
Flax (Orbax) checkpoint directory of the registered ``MODEL`` built with ``--kwargs``; a Flax
checkpoint directory (written here or by :mod:`flax_arch.train`) becomes a ``.pt``/``.pth``
or ``.safetensors`` file. Names and layouts move by the structural rules of
:mod:`flax_arch.interop`. Loading is strict by default: every missing, unexpected or
mis-shaped key is listed and nothing is written; ``--no-strict`` loads what fits and prints
the rest. A source that cannot be read gets a clear error, and no output appears: outputs
are written under a temporary name and renamed when complete; an existing output is never
overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from flax_arch.cli import USER_ERRORS, add_kwargs_option, parse_kwargs, report_error
from flax_arch.interop import LoadReport, load_torch_state_dict, torch_state_dict
from flax_arch.registry import get_model
from flax_arch.training.checkpoint import load_model, save_model
from flax_arch.xla import configure_xla_cpu

__all__ = ["ConversionError", "read_torch_file", "write_torch_file", "torch_to_flax",
           "flax_to_torch", "main"]

TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)


class ConversionError(ValueError):
    """A source that cannot be read or converted, or an output that would overwrite a file."""


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "shape")


def read_torch_file(path: str | os.PathLike, key: str | None = None) -> dict[str, Any]:
    """The ``state_dict`` (name -> torch tensor) in a ``.pt``/``.pth`` or ``.safetensors`` file.

    ``key`` selects a nested state_dict in a ``.pt`` dictionary (e.g. ``'model'`` or
    ``'state_dict'`` in a training checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import load_file

            loaded = load_file(path)
        elif path.suffix in TORCH_SUFFIXES:
            import torch

            loaded = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ConversionError(f"{path}: expected a .pt, .pth or .safetensors file")
    except ConversionError:
        raise
    except Exception as err:  # torch and safetensors raise many types for a corrupt file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"cannot read {path} (truncated, corrupt, or not a "
                              f"{path.suffix} weights file): {reason}") from err
    if key is not None:
        if not isinstance(loaded, Mapping) or key not in loaded:
            found = sorted(loaded) if isinstance(loaded, Mapping) else type(loaded).__name__
            raise ConversionError(f"{path} has no entry {key!r}; it holds {found}")
        loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}; expected a state_dict "
                              "(a mapping of names to tensors)")
    others = {k: type(v).__name__ for k, v in loaded.items() if not _is_tensor(v)}
    if others:
        listed = ", ".join(f"{k!r} ({t})" for k, t in sorted(others.items()))
        raise ConversionError(f"{path} is not a plain state_dict: entries {listed} are not "
                              "tensors; select the nested state_dict with --key NAME")
    return dict(loaded)


def write_torch_file(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Writes NumPy arrays as a ``.pt``/``.pth`` (``torch.save``) or ``.safetensors`` file.

    Integer buffers are written as int64, torch's dtype for them. The file is written under
    a temporary name beside ``path`` and renamed when complete; an existing ``path`` is
    refused.
    """
    import torch

    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConversionError(f"{path}: the output must end in .pt, .pth or .safetensors")
    if path.exists():
        raise ConversionError(f"{path} already exists; not overwriting it")
    tensors = {}
    for k, v in state_dict.items():
        v = np.array(v, order="C")  # (ascontiguousarray would make a scalar 1-d)
        if np.issubdtype(v.dtype, np.integer):
            v = v.astype(np.int64)
        tensors[k] = torch.from_numpy(v)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _initialised(name: str, kwargs: Mapping[str, Any]) -> nnx.Module:
    """The registered model ``name`` built with ``kwargs``, initialised as one compiled
    program rather than an XLA compile per operation (a non-strict load keeps the initial
    values of what it skips)."""
    return nnx.jit(lambda: get_model(name, rngs=nnx.Rngs(0), **kwargs))()


def torch_to_flax(name: str, kwargs: Mapping[str, Any], src: str | os.PathLike,
                  dst: str | os.PathLike, *, strict: bool = True,
                  key: str | None = None) -> LoadReport:
    """Converts the torch weights file ``src`` into a new Flax checkpoint ``dst`` of the
    registered model ``name`` built with ``kwargs``. Returns the load report."""
    dst = Path(dst)
    if dst.exists():
        raise ConversionError(f"{dst} already exists; not overwriting it")
    state_dict = read_torch_file(src, key)
    model = _initialised(name, kwargs)
    report = load_torch_state_dict(model, state_dict, strict=strict)
    save_model(dst, name, kwargs, model, source=Path(src).name)
    return report


def flax_to_torch(name: str, kwargs: Mapping[str, Any] | None, src: str | os.PathLike,
                  dst: str | os.PathLike) -> dict[str, np.ndarray]:
    """Writes the model ``name`` of the Flax checkpoint ``src`` as the torch weights file
    ``dst``. ``kwargs``, when given, must equal the checkpoint's constructor arguments."""
    dst = Path(dst)
    if dst.exists():
        raise ConversionError(f"{dst} already exists; not overwriting it")
    if dst.suffix not in WEIGHT_SUFFIXES:
        raise ConversionError(f"{dst}: the output must end in .pt, .pth or .safetensors")
    model, meta = load_model(src, name)
    if kwargs and json.loads(json.dumps(dict(kwargs))) != meta["kwargs"]:
        raise ConversionError(f"{src} holds {name!r} built with {meta['kwargs']}, not "
                              f"{dict(kwargs)}")
    state_dict = torch_state_dict(model)
    write_torch_file(state_dict, dst)
    return state_dict


# ----------------------------------------------------------------------------- CLI


def _print_report(report: LoadReport) -> None:
    if not (report.missing_keys or report.unexpected_keys or report.mismatched_keys):
        return
    print("not strict: loaded what fits; skipped", file=sys.stderr)
    if report.missing_keys:
        print(f"  missing keys (left at their initial values): {', '.join(report.missing_keys)}",
              file=sys.stderr)
    if report.unexpected_keys:
        print(f"  unexpected keys (ignored): {', '.join(report.unexpected_keys)}", file=sys.stderr)
    for k, got, want in report.mismatched_keys:
        print(f"  shape mismatch for {k}: got {got}, expected {want} (torch layout)",
              file=sys.stderr)


# One function per kind of source, each given the parsed arguments and --kwargs.
Conversion = Callable[[argparse.Namespace, dict[str, Any]], None]


def _from_torch_file(args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    """A .pt/.pth/.safetensors state_dict becomes a new Flax checkpoint of MODEL."""
    _print_report(torch_to_flax(args.model, kwargs, args.src, args.dst, strict=args.strict,
                                key=args.key))


def _from_checkpoint(args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    """A Flax checkpoint's MODEL becomes a .pt/.pth/.safetensors state_dict."""
    flax_to_torch(args.model, kwargs, args.src, args.dst)


def _from_torch_module(args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    """MODEL named by import path (``torchvision.models:mobilenet_v2``): the torch module it
    builds with --kwargs, the weights loaded into it (strictly unless --no-strict), ported by
    :func:`flax_arch.port` at an --input of that torch shape, becomes a new Flax checkpoint
    of the port's state (restore it into ``port(module, input)``)."""
    import torch

    from flax_arch.port import build_torch_module, port

    if Path(args.dst).exists():
        raise ConversionError(f"{args.dst} already exists; not overwriting it")
    module = build_torch_module(args.model, **kwargs)
    try:
        module.load_state_dict(read_torch_file(args.src, args.key), strict=args.strict)
    except RuntimeError as err:  # torch's strict load names every bad key
        raise ConversionError(f"{args.src} does not fit {args.model}: {err}") from err
    shape = tuple(int(n) for n in args.input.split(","))
    ported = port(module.eval(), torch.zeros(shape))
    save_model(args.dst, args.model, kwargs, ported, source=Path(args.src).name,
               port_input=list(shape))


def _conversion(args: argparse.Namespace) -> Conversion:
    """The conversion the arguments ask for, told by the source (and MODEL)."""
    if ":" in args.model:
        return _from_torch_module
    if Path(args.src).suffix in WEIGHT_SUFFIXES:
        return _from_torch_file
    return _from_checkpoint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flax_arch.convert",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("model", help="the registered model name, or a torch model to port named "
                   "by import path, package.module:callable")
    p.add_argument("src", help="a .pt/.pth/.safetensors file, or a Flax checkpoint directory")
    p.add_argument("dst", help="a new Flax checkpoint directory, or a .pt/.pth/.safetensors file")
    add_kwargs_option(p)
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="load the keys that fit and report the rest")
    p.add_argument("--key", help="the nested state_dict entry of a .pt dictionary")
    p.add_argument("--input", default="1,3,224,224", metavar="N,C,...",
                   help="a torch model's example input shape, for the port (default "
                   "1,3,224,224)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flax_arch.convert``; the exit status (2 for a refused conversion)."""
    args = _parser().parse_args(argv)
    try:
        _conversion(args)(args, parse_kwargs(args.kwargs))
    except USER_ERRORS as err:
        return report_error(err)
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    configure_xla_cpu()  # before JAX starts
    sys.exit(main())
