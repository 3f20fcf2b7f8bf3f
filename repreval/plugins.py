"""Plugin host: hookspecs -> entry points (group ``repreval``) -> registries.

Nothing is loaded at import time; call :func:`load_plugins`. Built-in plugins are entry points
of the ``repreval`` distribution itself, so they are found exactly like third-party ones.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field

import pluggy

from . import hookspecs
from .api import Registries
from .errors import ReprevalError, suggest
from .registry import Registry

BLOCK_ENV = "REPREVAL_BLOCK_PLUGINS"


@dataclass
class PluginInfo:
    """Provenance of one loaded plugin: distribution, version, and the names it registered per kind."""

    name: str
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    broken: str = ""  # why it failed to import or register (then it registered nothing)


@dataclass
class Plugins(Registries):
    """The loaded plugins: one registry per plugin kind (``plugins.score``, ...), plus provenance."""

    manager: pluggy.PluginManager
    info: dict[str, PluginInfo]
    blocked: tuple[str, ...]
    broken: dict[str, PluginInfo] = field(default_factory=dict)  # installed plugins that failed: skipped

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (a key of ``Registries.BASES``, e.g. ``"score"``)."""
        if kind not in Registries.BASES:
            raise ReprevalError(f"unknown plugin kind {kind!r}", fix=suggest(kind, Registries.BASES))
        return getattr(self, kind)

    def registries(self) -> Registries:
        """The registries alone, as plugins that compose others receive them."""
        return Registries(**{kind: getattr(self, kind) for kind in Registries.BASES})


def blocked_from_env() -> list[str]:
    """The plugin names in ``$REPREVAL_BLOCK_PLUGINS`` (comma-separated)."""
    return [name.strip() for name in os.environ.get(BLOCK_ENV, "").split(",") if name.strip()]


def load_plugins(block=(), extra_plugins=()) -> Plugins:
    """Load every ``repreval`` entry point not blocked, then fill the registries.

    ``block``: plugin (entry-point) names to skip, added to those in $REPREVAL_BLOCK_PLUGINS.
    ``extra_plugins``: objects (modules or classes) with hook implementations, registered in-process
    (handy in notebooks and tests; a distribution should use an entry point instead).
    """
    blocked = tuple(dict.fromkeys([*blocked_from_env(), *block]))
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT)}
    loading = _Loading(manager, entry_points)
    loading.register_entry_points()
    loading.register_extra(extra_plugins, blocked)
    registries = loading.fill_registries()
    return Plugins(**registries, manager=manager, info=loading.info, blocked=blocked, broken=loading.broken)


@dataclass
class _Loading:
    """One :func:`load_plugins` under way: the plugin manager, the installed entry points, and which plugins
    loaded (``info``) or broke (``broken``) so far. An installed plugin that fails is skipped, not fatal."""

    manager: pluggy.PluginManager
    entry_points: dict[str, importlib.metadata.EntryPoint]
    info: dict[str, PluginInfo] = field(default_factory=dict)
    broken: dict[str, PluginInfo] = field(default_factory=dict)

    def fail(self, name: str, exc: BaseException) -> None:
        """Mark the installed plugin ``name`` broken by ``exc`` and unregister it."""
        self.info.pop(name, None)
        distribution, version = _distribution(self.entry_points.get(name))
        self.broken[name] = PluginInfo(name, distribution, version, broken=_one_line(exc))
        if self.manager.get_plugin(name) is not None:
            self.manager.unregister(name=name)

    def register_entry_points(self) -> None:
        """Import and register each entry point not blocked; a misspelt hook name fails here."""
        for name, entry_point in sorted(self.entry_points.items()):
            if self.manager.is_blocked(name):
                continue
            try:
                self.manager.register(entry_point.load(), name=name)
                self.manager.check_pending()
            except Exception as exc:
                self.fail(name, exc)
                continue
            self.info[name] = PluginInfo(name, *_distribution(entry_point))

    def register_extra(self, extra_plugins, blocked: tuple[str, ...]) -> None:
        """Register the in-process plugins (notebooks, tests); their errors are the caller's, raised."""
        try:
            for i, plugin in enumerate(extra_plugins):
                name = getattr(plugin, "__name__", None) or f"extra-{i}"
                if name not in blocked:
                    self.manager.register(plugin, name=name)
                    self.info[name] = PluginInfo(name, "(in-process)", "")
            self.manager.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.manager.get_name(exc.plugin) or getattr(exc.plugin, "__name__", str(exc.plugin))
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise ReprevalError(
                f"plugin {name!r} is broken: {detail}",
                fix=f"fix the plugin, or skip it with --block {name}",
            ) from None

    def fill_registries(self) -> dict[str, Registry]:
        """One registry per plugin kind, holding what each registered plugin's hooks register."""
        registries: dict[str, Registry] = {
            kind: Registry(kind, Registries.BASES[kind]) for kind in hookspecs.HOOK_KINDS.values()
        }
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            hook = getattr(self.manager.hook, hook_name)
            # Call each implementation separately so the registry knows which plugin provided what.
            for impl in reversed(hook.get_hookimpls()):
                for factory, kwargs in self.registrations(impl):
                    entry = registries[kind].add(factory, plugin=impl.plugin_name, **kwargs)
                    self.info[impl.plugin_name].registered.setdefault(kind, []).append(entry.name)
        return registries

    def registrations(self, impl: pluggy.HookImpl) -> list[tuple]:
        """What the hook implementation ``impl`` registers: ``(factory, options)`` pairs; none from a broken
        plugin (an installed one that fails here is marked broken)."""
        if impl.plugin_name in self.broken:
            return []
        calls: list[tuple] = []
        try:
            impl.function(register=lambda factory, **kwargs: calls.append((factory, kwargs)))
        except Exception as exc:
            if impl.plugin_name not in self.entry_points:
                raise
            self.fail(impl.plugin_name, exc)
            return []
        return calls


def _distribution(entry_point) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "?", ""
    return dist.metadata["Name"] or "?", dist.version or ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"[:300]


def _registered_name(manager: pluggy.PluginManager, plugin: object) -> str:
    """The name of a plugin the manager lists (so registered: only unregistered plugins have no name)."""
    name = manager.get_name(plugin)
    assert name is not None
    return name
