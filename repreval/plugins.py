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
    info: dict[str, PluginInfo] = {}
    broken: dict[str, PluginInfo] = {}

    def fail(name: str, exc: BaseException) -> None:  # an installed plugin that fails is skipped, not fatal
        info.pop(name, None)
        distribution, version = _distribution(entry_points.get(name))
        broken[name] = PluginInfo(name, distribution, version, broken=_one_line(exc))
        if manager.get_plugin(name) is not None:
            manager.unregister(name=name)

    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT)}
    for name, entry_point in sorted(entry_points.items()):
        if manager.is_blocked(name):
            continue
        try:
            manager.register(entry_point.load(), name=name)
            manager.check_pending()  # a misspelt hook name fails here
        except Exception as exc:
            fail(name, exc)
            continue
        info[name] = PluginInfo(name, *_distribution(entry_point))
    try:  # in-process plugins (notebooks, tests): their errors are the caller's, raised
        for i, plugin in enumerate(extra_plugins):
            name = getattr(plugin, "__name__", None) or f"extra-{i}"
            if name not in blocked:
                manager.register(plugin, name=name)
                info[name] = PluginInfo(name, "(in-process)", "")
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or getattr(exc.plugin, "__name__", str(exc.plugin))
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ReprevalError(
            f"plugin {name!r} is broken: {detail}",
            fix=f"fix the plugin, or skip it with --block {name}",
        ) from None

    registries: dict[str, Registry] = {
        kind: Registry(kind, Registries.BASES[kind]) for kind in hookspecs.HOOK_KINDS.values()
    }
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        registry = registries[kind]
        hook = getattr(manager.hook, hook_name)
        # Call each implementation separately so the registry knows which plugin provided what.
        for impl in reversed(hook.get_hookimpls()):
            plugin_name = impl.plugin_name
            if plugin_name in broken:
                continue
            calls: list[tuple] = []
            try:
                impl.function(register=lambda factory, _calls=calls, **kwargs: _calls.append((factory, kwargs)))
            except Exception as exc:
                if plugin_name not in entry_points:
                    raise
                fail(plugin_name, exc)
                continue
            for factory, kwargs in calls:
                entry = registry.add(factory, plugin=plugin_name, **kwargs)
                info[plugin_name].registered.setdefault(kind, []).append(entry.name)
    return Plugins(**registries, manager=manager, info=info, blocked=blocked, broken=broken)


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
