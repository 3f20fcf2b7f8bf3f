"""Strict name -> factory registries with did-you-mean suggestions and provenance."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import ReprevalError, UnknownNameError


def suggest(name: str, candidates) -> str:
    """A 'did you mean' hint, or a list of what exists when nothing is close."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
    return f"known: {shown}" if candidates else "none are registered"


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    plugin: str
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass
class Registry:
    """Names of one kind (saliency methods, scores, ...) -> factories."""

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def add(self, factory, *, plugin: str, name: str | None = None, aliases=(), description: str | None = None):
        name = name or getattr(factory, "name", None)
        if not name or not isinstance(name, str):
            raise ReprevalError(
                f"plugin {plugin!r} registered a {self.kind} without a name",
                fix="pass name=... to register() or give the factory a 'name' attribute",
            )
        for key in (name, *aliases):
            owner = self._owner(key)
            if owner is not None:
                raise ReprevalError(
                    f"{self.kind} {key!r} is registered twice: by plugin {owner.plugin!r} and by plugin {plugin!r}",
                    fix="rename one of them, or block a plugin with --block NAME / REPREVAL_BLOCK_PLUGINS",
                )
        if description is None:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, factory, plugin, tuple(aliases), description)
        for alias in aliases:
            self._aliases[alias] = name

    def _owner(self, key: str) -> Entry | None:
        if key in self._entries:
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        return None

    def entry(self, name: str) -> Entry:
        found = self._owner(name)
        if found is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}",
                fix=suggest(name, list(self._entries) + list(self._aliases)),
            )
        return found

    def create(self, name: str, options: dict | None = None):
        """Instantiate ``name`` with suite options; bad options become a ReprevalError."""
        entry = self.entry(name)
        try:
            return entry.factory(**(options or {}))
        except TypeError as exc:
            raise ReprevalError(
                f"bad options for {self.kind} {name!r}: {exc}",
                fix=f"see `repreval list {self.kind}` and the plugin's documentation",
            ) from None

    def __contains__(self, name: str) -> bool:
        return self._owner(name) is not None

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[name] for name in sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
