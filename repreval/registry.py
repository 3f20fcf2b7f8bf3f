"""Strict name -> factory registries, one per plugin kind, with did-you-mean suggestions and provenance.

A registry is typed: ``Registry[SaliencyMethod]`` accepts classes deriving from the kind's base class (or
any callable whose result does, checked when it is called) and nothing else.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import PluginOptionError, ReprevalError, UnknownNameError, suggest

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """A registered name: its factory, the plugin that registered it, aliases and a one-line description."""

    name: str
    factory: Callable[..., T]
    plugin: str
    aliases: tuple[str, ...] = ()
    description: str = ""


class Registry(Generic[T]):
    """Names of one kind (saliency methods, scores, ...) -> factories of ``base`` instances."""

    def __init__(self, kind: str, base: type | tuple[type, ...]):
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def add(
        self,
        factory: Callable[..., T],
        *,
        plugin: str,
        name: str | None = None,
        aliases: tuple[str, ...] = (),
        description: str | None = None,
    ) -> Entry[T]:
        """Register ``factory`` as ``name`` (default: its ``name`` attribute) and ``aliases``.

        ``description`` defaults to the first line of the factory's docstring. A class must derive from
        the kind's base; a name or alias already taken is an error.
        """
        name = name or getattr(factory, "name", None)
        if not name or not isinstance(name, str):
            raise ReprevalError(
                f"plugin {plugin!r} registered a {self.kind} without a name",
                fix="pass name=... to register() or give the factory a 'name' attribute",
            )
        checked: object = factory  # narrowed below without narrowing ``factory`` (still a Callable[..., T])
        if inspect.isclass(checked) and not issubclass(checked, self.base):
            raise ReprevalError(
                f"plugin {plugin!r} registered {checked.__name__} as {self.kind} {name!r}, "
                f"but it does not derive from {self._base_names()}",
                fix=f"subclass {self._base_names()} from repreval.api",
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
        entry = self._entries[name] = Entry(name, factory, plugin, tuple(aliases), description)
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def _base_names(self) -> str:
        bases = self.base if isinstance(self.base, tuple) else (self.base,)
        return " or ".join(base.__name__ for base in bases)

    def _owner(self, key: str) -> Entry[T] | None:
        if key in self._entries:
            return self._entries[key]
        if key in self._aliases:
            return self._entries[self._aliases[key]]
        return None

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name`` or an alias; :class:`UnknownNameError` with suggestions otherwise."""
        found = self._owner(name)
        if found is None:
            raise UnknownNameError(f"unknown {self.kind} {name!r}", fix=suggest(name, [*self._entries, *self._aliases]))
        return found

    def create(self, name: str, options: dict[str, Any] | None = None) -> T:
        """Instantiate ``name`` with suite options.

        Option names are checked against the factory's signature first; a plugin rejects bad values by
        raising :class:`PluginOptionError`. Both become one-line errors naming the plugin.
        """
        entry = self.entry(name)
        options = dict(options or {})
        try:
            self._check_option_names(entry, options)
            instance = entry.factory(**options)
        except ReprevalError as exc:
            kind = "bad options for" if isinstance(exc, PluginOptionError) else "cannot create"
            raise ReprevalError(
                f"{kind} {self.kind} {entry.name!r}: {exc.problem}", fix=exc.fix or self._see()
            ) from None
        except Exception as exc:
            raise ReprevalError(
                f"{self.kind} {entry.name!r} (plugin {entry.plugin!r}) failed to start: {type(exc).__name__}: {exc}",
                fix=f"fix the plugin or its options, or block it with --block {entry.plugin}",
            ) from None
        if not isinstance(instance, self.base):
            raise ReprevalError(
                f"{self.kind} {entry.name!r} (plugin {entry.plugin!r}) gave a {type(instance).__name__}, "
                f"not a {self._base_names()}",
                fix="make the registered factory return a repreval.api " + self._base_names(),
            )
        return instance

    def _check_option_names(self, entry: Entry[T], options: dict[str, Any]) -> None:
        try:
            signature = inspect.signature(entry.factory)
        except (TypeError, ValueError):  # a builtin without a signature: let the call decide
            return
        parameters = signature.parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            accepted = None
        else:
            accepted = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [key for key in options if accepted is not None and key not in accepted]
        if unknown:
            if not accepted:
                raise PluginOptionError(f"it takes no options, got {unknown[0]!r}", fix="remove the options")
            raise PluginOptionError(f"no option {unknown[0]!r}", fix=suggest(unknown[0], accepted))
        missing = [
            n
            for n, p in parameters.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in options
        ]
        if missing:
            raise PluginOptionError(f"the option {missing[0]!r} is required", fix=self._see())

    def _see(self) -> str:
        return f"see `repreval list {self.kind}` and the plugin's documentation"

    def __contains__(self, name: str) -> bool:
        return self._owner(name) is not None

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in sorted(self._entries))

    def names(self) -> list[str]:
        """The registered names, sorted (aliases not included)."""
        return sorted(self._entries)
