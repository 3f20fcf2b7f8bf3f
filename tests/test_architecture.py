"""The layering rules, checked on the source: plugins import only ``repreval.api``; the configuration
imports nothing of repreval; no import cycles inside repreval (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repreval"
PLUGINS = ROOT / "plugins"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in ``path`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PLUGINS if PLUGINS in path.parents else ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_plugins_import_only_the_public_api():
    offences = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for module, line in _imports(path):
            if (module == "repreval" or module.startswith("repreval.")) and module != "repreval.api":
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offences, "plugins may import only repreval.api:\n" + "\n".join(offences)


def test_the_configuration_imports_nothing_else_of_repreval():
    imported = [module for module, _ in _imports(PACKAGE / "config.py") if module.startswith("repreval")]
    assert imported == [], imported


def test_no_import_cycles_inside_repreval():
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {
        name: {module for module, _ in _imports(path) if module in modules and module != name}
        for name, path in modules.items()
    }
    # ``from .engine import x`` names the package; importing a package runs its __init__ only.
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(
                    " -> ".join(trail[trail.index(target) :] + [name, target])
                    if target in trail
                    else f"{name} -> {target}"
                )
            elif target not in state:
                visit(target, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
