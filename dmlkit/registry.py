"""One small name -> object registry for losses, miners, models and datasets.

Every registry normalises names the same way (case, ``-``, ``_`` and spaces are ignored, and
aliases resolve to their canonical name), fails on an unknown name with the closest known names
and the full list, and on an unknown parameter with the object's parameters.

>>> from dmlkit.registry import Registry
>>> colors = Registry("color")
>>> @colors.register("red", aliases=("rouge",))
... def red(shade: float = 1.0):
...     return ("red", shade)
>>> colors.build("Rouge", shade=0.5)
('red', 0.5)
>>> colors.available()
['red']
>>> colors.build("rde")
Traceback (most recent call last):
...
ValueError: unknown color 'rde'. Did you mean 'red'? Known colors: red
>>> colors.build("red", hue=3)
Traceback (most recent call last):
...
ValueError: color 'red' has no parameter(s) ['hue']; its parameters are ['shade']
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Registry", "normalize_name"]


def normalize_name(name: str) -> str:
    """The lookup key of a name: lower case, without ``-``, ``_`` and spaces."""
    return str(name).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


class Registry:
    """Canonical names (and aliases) -> registered objects (classes or factories).

    ``register(name, *more_names, aliases=(), **facts)`` is a decorator; every name in
    ``names`` is listed by :meth:`available`, aliases only resolve. ``facts`` are stored and
    returned by :meth:`facts` (a dataset's Recall@K preset, for example).
    """

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._objects: dict[str, Any] = {}      # canonical name -> object
        self._keys: dict[str, str] = {}         # normalised name or alias -> canonical name
        self._facts: dict[str, dict] = {}

    # ------------------------------------------------------------------ registration
    def add(self, names: str | Iterable[str], obj: Any, aliases: Iterable[str] = (),
            **facts) -> Any:
        """Register ``obj`` under ``names`` (listed) and ``aliases`` (resolve only)."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError(f"a {self.kind} needs at least one name")
        for i, name in enumerate([*names, *aliases]):
            key = normalize_name(name)
            known = self._keys.get(key)
            if known is not None and self._objects[known] is not obj:
                raise ValueError(f"{self.kind} name {name!r} is already registered "
                                 f"(as {known!r})")
            if i < len(names):
                self._objects[name] = obj
                self._facts[name] = dict(facts)
                self._keys[key] = name
            else:
                self._keys[key] = names[0]
        return obj

    def register(self, *names: str, aliases: Iterable[str] = (), **facts) -> Callable:
        """Decorator form of :meth:`add`."""

        def deco(obj):
            return self.add(names, obj, aliases=aliases, **facts)

        return deco

    # ------------------------------------------------------------------ lookup
    def available(self) -> list[str]:
        """Sorted canonical names (aliases are not listed)."""
        return sorted(self._objects)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._keys

    def __iter__(self):
        return iter(self.available())

    def __len__(self) -> int:
        return len(self._objects)

    def canonical(self, name: str) -> str:
        """The canonical name that ``name`` (any spelling or alias) resolves to."""
        key = normalize_name(name)
        if key not in self._keys:
            raise self._unknown(name)
        return self._keys[key]

    def get(self, name: str) -> Any:
        """The object registered under ``name``."""
        return self._objects[self.canonical(name)]

    def facts(self, name: str) -> dict:
        """The facts registered with ``name`` (a copy)."""
        return dict(self._facts[self.canonical(name)])

    def parameters(self, name: str, skip: Iterable[str] = ()) -> list[str] | None:
        """Parameter names of the registered callable (None when it takes ``**kwargs``)."""
        try:
            params = inspect.signature(self.get(name)).parameters
        except (TypeError, ValueError):  # no introspectable signature
            return None
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return None
        skip = {"self", *skip}
        return [p for p, v in params.items()
                if p not in skip and v.kind not in (v.VAR_POSITIONAL,)]

    def check_parameters(self, name: str, params: Iterable[str], skip: Iterable[str] = ()
                         ) -> None:
        """Raise a ValueError naming the parameters that ``name`` does not accept."""
        allowed = self.parameters(name, skip=skip)
        if allowed is None:
            return
        unknown = [k for k in params if k not in allowed]
        if unknown:
            raise ValueError(f"{self.kind} {name!r} has no parameter(s) {unknown}; "
                             f"its parameters are {allowed}")

    def build(self, name: str, *args, **kwargs) -> Any:
        """Call the registered object with ``kwargs`` after checking their names."""
        self.check_parameters(name, kwargs)
        return self.get(name)(*args, **kwargs)

    def _unknown(self, name: str) -> ValueError:
        close = difflib.get_close_matches(normalize_name(name), list(self._keys), n=3)
        shown = list(dict.fromkeys(self._keys[c] for c in close))
        hint = f" Did you mean {', '.join(map(repr, shown))}?" if shown else ""
        return ValueError(f"unknown {self.kind} {name!r}.{hint} Known {self.plural}: "
                          f"{', '.join(self.available())}")

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} {self.plural})"
