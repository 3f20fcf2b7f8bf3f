"""Plugin host: hookspecs -> entry points (group ``repreval``) -> registries.

Nothing is loaded at import time; call :func:`load_plugins`. Built-in plugins are entry points
of the ``repreval`` distribution itself, so they are found exactly like third-party ones.
"""

from __future__ import annotations

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


@dataclass
class Plugins(Registries):
    """The loaded plugins: one registry per plugin kind (``plugins.score``, ...), plus provenance."""

    manager: pluggy.PluginManager
    info: dict[str, PluginInfo]
    blocked: tuple[str, ...]

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
    try:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
        for i, plugin in enumerate(extra_plugins):
            name = getattr(plugin, "__name__", None) or f"extra-{i}"
            if name not in blocked:
                manager.register(plugin, name=name)
        manager.check_pending()  # a misspelt hook name in a plugin fails here, loudly
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or getattr(exc.plugin, "__name__", str(exc.plugin))
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ReprevalError(
            f"plugin {name!r} is broken: {detail}",
            fix=f"fix the plugin, or skip it with --block {name}",
        ) from None
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ReprevalError(
            f"a plugin failed to load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix=f"reinstall or fix it, or skip it with --block NAME (or ${BLOCK_ENV}); "
            "`pip list` shows what is installed",
        ) from None

    info: dict[str, PluginInfo] = {}
    for plugin, dist in manager.list_plugin_distinfo():
        name = _registered_name(manager, plugin)
        info[name] = PluginInfo(name, dist.project_name, dist.version)
    for plugin in manager.get_plugins():
        name = _registered_name(manager, plugin)
        info.setdefault(name, PluginInfo(name, "(in-process)", ""))

    registries: dict[str, Registry] = {}
    for hook_name, kind in hookspecs.HOOK_KINDS.items():
        registry = registries[kind] = Registry(kind, Registries.BASES[kind])
        hook = getattr(manager.hook, hook_name)
        # Call each implementation separately so the registry knows which plugin provided what.
        for impl in reversed(hook.get_hookimpls()):
            plugin_name = impl.plugin_name

            def register(factory, *, name=None, aliases=(), description=None, _plugin=plugin_name, _registry=registry):
                entry = _registry.add(factory, plugin=_plugin, name=name, aliases=aliases, description=description)
                info[_plugin].registered.setdefault(_registry.kind, []).append(entry.name)

            impl.function(register=register)
    return Plugins(**registries, manager=manager, info=info, blocked=blocked)


def _registered_name(manager: pluggy.PluginManager, plugin: object) -> str:
    """The name of a plugin the manager lists (so registered: only unregistered plugins have no name)."""
    name = manager.get_name(plugin)
    assert name is not None
    return name
