"""Name -> loss class registry: ``build("multi_similarity", alpha=2, ...)``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

__all__ = ["available", "build", "get", "register"]


def register(*names: str):
    """Class decorator registering a loss under one or more names."""

    def deco(cls):
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError(f"loss name {name!r} is already registered")
            _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Sorted list of every registered loss name."""
    return sorted(_REGISTRY)


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown loss {name!r}.{hint} Known losses: {', '.join(available())}")


def get(name: str) -> Callable[..., nn.Module]:
    """The class (or factory) registered under ``name``."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "")
    if key not in _REGISTRY:
        raise _unknown(str(name))
    return _REGISTRY[key]


def build(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered under ``name`` with the paper's hyper-parameters."""
    factory = get(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        params = None
    if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ValueError(f"loss {name!r} has no parameter(s) {unknown}; "
                             f"its parameters are {[p for p in params if p != 'self']}")
    return factory(**kwargs)
