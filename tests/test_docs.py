"""docs/hooks.md stays equal to the code: the hooks and their signatures of repreval.hookspecs, the plugin base
classes of repreval.api with the attributes and methods a plugin implements."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from repreval import api, hookspecs

HOOKS_MD = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
HEADING = re.compile(r"^## `(\w+)(\(.*\))`$", re.M)


def documented_sections() -> dict[str, tuple[str, str]]:
    """Hook name -> (documented signature, the section's text) from the ``## `hook(args)` `` headings."""
    text = HOOKS_MD.read_text()
    headings = list(HEADING.finditer(text))
    sections = {}
    for match in headings:
        end = text.find("\n## ", match.end())
        sections[match.group(1)] = (match.group(2), text[match.end() : end if end != -1 else len(text)])
    return sections


def hookspec_functions() -> dict[str, str]:
    """Hook name -> signature of every function marked @hookspec in repreval.hookspecs."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: str(inspect.signature(function))
        for name, function in vars(hookspecs).items()
        if inspect.isfunction(function) and hasattr(function, marker)
    }


def test_hookspecs_and_hook_kinds_agree():
    assert set(hookspec_functions()) == set(hookspecs.HOOK_KINDS)


def test_the_documented_hooks_and_signatures_are_those_of_hookspecs():
    documented = {name: signature for name, (signature, _) in documented_sections().items()}
    assert documented == hookspec_functions()
    assert list(documented) == list(hookspecs.HOOK_KINDS)  # in the order `repreval plugins` shows them


def _bases(kind: str) -> tuple[type, ...]:
    base = api.Registries.BASES[kind]
    return base if isinstance(base, tuple) else (base,)


def _implemented_by_plugins(base: type) -> list[str]:
    """Class attributes (ClassVar annotations) and public methods a plugin of ``base`` sets or overrides."""
    attributes = [
        name for name, annotation in vars(base).get("__annotations__", {}).items() if "ClassVar" in str(annotation)
    ]
    methods = [
        name
        for name, value in vars(base).items()
        if inspect.isfunction(value) and (not name.startswith("_") or name == "__call__")
    ]
    return attributes + methods


@pytest.mark.parametrize("hook, kind", list(hookspecs.HOOK_KINDS.items()))
def test_each_hook_section_documents_its_base_classes(hook, kind):
    _, section = documented_sections()[hook]
    for base in _bases(kind):
        assert f"`{base.__name__}`" in section, f"the {hook} section does not name {base.__name__}"
        for member in _implemented_by_plugins(base):
            assert re.search(rf"`{re.escape(member)}\b", section), (
                f"the {hook} section does not document {base.__name__}.{member}"
            )


def test_every_plugin_base_class_and_data_type_of_the_api_is_mentioned():
    text = HOOKS_MD.read_text()
    plugin_bases = {base for kind in api.Registries.BASES for base in _bases(kind)}
    assert plugin_bases <= {getattr(api, name) for name in api.__all__}
    classes = [name for name in api.__all__ if inspect.isclass(getattr(api, name)) and name != "Registry"]
    missing = [name for name in classes if f"`{name}`" not in text]
    assert not missing, f"docs/hooks.md does not mention {missing}"
