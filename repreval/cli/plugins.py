"""What is installed and how to add to it: ``plugins``, ``list KIND`` and ``new-plugin NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ..errors import ReprevalError, suggest
from ..new_plugin import KINDS, check_request, write_plugin
from ..render import plain
from ._common import EXIT_OK, Command, console, plugins_of, say

#: What ``list`` and ``new-plugin --kind`` accept, by the registry each names
KIND_ALIASES = {
    "saliency": "saliency",
    "saliency_methods": "saliency",
    "methods": "saliency",
    "aggregator": "aggregator",
    "aggregators": "aggregator",
    "score": "score",
    "scores": "score",
    "model_source": "model_source",
    "model_sources": "model_source",
    "models": "model_source",
    "sources": "model_source",
    "dataset": "dataset",
    "datasets": "dataset",
    "variant": "variant",
    "variants": "variant",
    "explainer": "explainer",
    "explainers": "explainer",
    "executor": "executor",
    "executors": "executor",
}


def add_plugins_arguments(parser: argparse.ArgumentParser) -> None:
    """``plugins``'s arguments."""
    parser.add_argument("--format", choices=["table", "json"], default="table")


def handle_plugins(args: argparse.Namespace) -> int:
    """``repreval plugins``: every loaded plugin with its distribution, version and registrations; blocked ones."""
    plugins = plugins_of(args)
    rows = sorted(plugins.info.values(), key=lambda p: (p.distribution != "repreval", p.name))
    if args.format == "json":
        listed = [{k: v for k, v in vars(p).items() if k != "broken"} for p in rows]
        listed += [vars(p) for p in plugins.broken.values()]
        print(json.dumps([*listed, {"blocked": list(plugins.blocked)}], indent=1))
        return EXIT_OK
    table = Table(title="repreval plugins", title_justify="left", header_style="bold")
    for column in ("plugin", "distribution", "version", "registered"):
        table.add_column(column)
    for info in rows:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
        table.add_row(plain(info.name), plain(info.distribution), plain(info.version), plain(registered or "(nothing)"))
    for info in plugins.broken.values():
        table.add_row(
            plain(info.name), plain(info.distribution), plain(info.version), plain(f"broken: {info.broken}", "red")
        )
    for name in plugins.blocked:
        table.add_row(plain(name), "", "", plain("blocked", "yellow"))
    console.print(table)
    return EXIT_OK


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    """``list``'s arguments."""
    parser.add_argument(
        "kind", help="saliency | aggregators | scores | models | datasets | variants | explainers | executors"
    )


def handle_list(args: argparse.Namespace) -> int:
    """``repreval list KIND``: the registered names of one plugin kind, with aliases, plugin and description."""
    kind = KIND_ALIASES.get(args.kind.lower())
    if kind is None:
        raise ReprevalError(f"unknown kind {args.kind!r}", fix=suggest(args.kind, KIND_ALIASES))
    plugins = plugins_of(args)
    table = Table(title=f"registered: {kind}", title_justify="left", header_style="bold")
    for column in ("name", "aliases", "plugin", "description"):
        table.add_column(column)
    for entry in plugins.registry(kind):
        table.add_row(*map(plain, (entry.name, ", ".join(entry.aliases), entry.plugin, entry.description)))
    console.print(table)
    return EXIT_OK


def add_new_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """``new-plugin``'s arguments."""
    parser.add_argument(
        "name", help="plugin name, lowercase (e.g. peak_fraction): the entry point and the registered name"
    )
    parser.add_argument(
        "--kind", required=True, help="saliency | aggregator | score | dataset | variant | model_source | explainer"
    )
    parser.add_argument("--out", default=".", metavar="DIR", help="write DIR/NAME (default: ./NAME)")


def handle_new_plugin(args: argparse.Namespace) -> int:
    """``repreval new-plugin NAME --kind KIND``: write a plugin package from the templates."""
    kind = KIND_ALIASES.get(args.kind.lower(), args.kind)
    target = Path(args.out) / args.name
    check_request(args.name, kind, target)  # before loading plugins: bad input fails fast
    plugins = plugins_of(args)
    taken = {
        "plugin": list(plugins.info),
        kind.replace("_", " "): [
            n for e in plugins.registry(KINDS[kind].registry or kind) for n in (e.name, *e.aliases)
        ],
    }
    written = write_plugin(args.name, kind, args.out, taken=taken)
    for path in written:
        say(f"created {path}")
    say(f"next: pip install -e {target} && pytest {target} && repreval list {KINDS[kind].list_kind}")
    return EXIT_OK


COMMANDS = [
    Command("plugins", "every plugin, its version and what it registered", add_plugins_arguments, handle_plugins),
    Command("list", "registered names of one kind", add_list_arguments, handle_list),
    Command(
        "new-plugin",
        "start a plugin package: one working example, a test, a README",
        add_new_plugin_arguments,
        handle_new_plugin,
    ),
]
