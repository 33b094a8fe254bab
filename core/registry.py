"""A tiny name -> object registry shared by `models/` and `attacks/`.

Model Garden style: a decorator writes into a dict, a duplicate name raises
`KeyError`, and a lookup of an unknown name raises a `KeyError` that lists the
known names (fnmatch patterns in `names()` follow timm's `list_models`).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable


class Registry:
    """Maps names to callables.

    Args:
        kind: what is registered ("model", "attack"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator that registers `fn` under `name`.

        Raises:
            KeyError: if `name` is already registered.
        """

        def decorator(fn: Callable) -> Callable:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the entry for `name`.

        Raises:
            KeyError: if `name` is unknown; the message lists the known names.
        """
        if name not in self._entries:
            raise KeyError(
                f"unknown {self.kind} {name!r}; available: {self.names()}"
            )
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch `pattern`."""
        return sorted(fnmatch.filter(self._entries, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries
