"""Name -> PyTorch reference builder, the same names as :mod:`flax_arch.registry`."""

from collections.abc import Callable

from torch import nn

__all__ = ["register", "list_models", "get_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = builder


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model ``name`` with constructor ``kwargs``."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
