"""``repreval new-plugin NAME --kind KIND``: a new, installable plugin package from the templates in
``repreval/templates/new_plugin/`` (``string.Template`` files: ``$name``, ``$package``, ...)."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from .errors import ReprevalError, suggest

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Kind:
    """What a generated plugin of one kind needs besides its module template ``kinds/<kind>.py.tmpl``."""

    hook: str
    class_suffix: str
    text: str  # "saliency method": for the README
    list_kind: str  # the argument of `repreval list`
    usage: str  # a suite snippet (YAML)
    check_arguments: str = ""  # extra arguments of check_plugin in the generated test
    summary: str = ""
    registry: str = ""  # the registry it registers into, when not the kind's own name (path_saliency: saliency)


KINDS = {
    "saliency": Kind(
        "register_saliency_methods",
        "Saliency",
        "saliency method",
        "saliency",
        "evaluation:\n  saliency: [gradients, $name]",
        summary="rectified activations x gradients",
    ),
    "path_saliency": Kind(
        "register_saliency_methods",
        "Saliency",
        "saliency method that takes gradients at points of its own",
        "saliency",
        "evaluation:\n  saliency: [gradients, $name, {$name: {steps: 16}}]",
        summary="integrated gradients from a blurred baseline",
        registry="saliency",
    ),
    "aggregator": Kind(
        "register_aggregators",
        "Aggregator",
        "aggregator",
        "aggregators",
        "evaluation:\n  embedding_aggregators: [mean, $name, {$name: {power: 4}}]",
        summary="the power mean of absolute values",
    ),
    "score": Kind(
        "register_scores",
        "Score",
        "score",
        "scores",
        "evaluation:\n  scores: [noise_score, $name, {$name: {threshold: 0.7}}]",
        summary="the fraction of the attribution map above a threshold",
    ),
    "dataset": Kind(
        "register_datasets",
        "Dataset",
        "dataset",
        "datasets",
        "datasets:\n  stripes: {kind: $name, options: {count: 64}, limit: 32}",
        summary="synthetic stripe images in four orientations",
    ),
    "variant": Kind(
        "register_variants",
        "Variant",
        "variant",
        "variants",
        "variants: [trained, {$name: {scale: 0.1}}]",
        summary="trained weights plus Gaussian noise",
    ),
    "model_source": Kind(
        "register_model_sources",
        "Models",
        "model source",
        "models",
        'models:\n  net: {model: "$name:small", options: {classes: 10}}',
        check_arguments=', model="$name:small"',
        summary="small CNNs ($name:small, $name:wide)",
    ),
    "explainer": Kind(
        "register_explainers",
        "Explainer",
        "explainer",
        "explainers",
        "evaluation:\n  explainer_data: train\n  explainers: [parts, {$name: {codes: 8}}]",
        summary="a 1×1-conv bottleneck whose codes are the parts",
    ),
}

#: Template (under templates/new_plugin/) -> path of the generated file, itself a template.
LAYOUT = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "tests/test_plugin.py.tmpl": "tests/test_plugin.py",
    "kinds/{kind}.py.tmpl": "$package/__init__.py",
}


def check_request(name: str, kind: str, target: Path, taken: dict[str, list[str]] | None = None) -> None:
    """ReprevalError for a bad name, an unknown kind, a non-empty target, or a name repreval already knows.

    ``taken``: names in use, ``{"plugin": [...], kind: [...]}`` (from the loaded plugins), if known.
    """
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name) or name.endswith("_"):
        raise ReprevalError(
            f"bad plugin name {name!r}: use lowercase letters, digits and underscores, starting with a letter "
            "(not a Python keyword)",
            fix="e.g. repreval new-plugin peak_fraction --kind score",
        )
    if kind not in KINDS:
        raise ReprevalError(f"unknown plugin kind {kind!r}", fix=suggest(kind, KINDS))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ReprevalError(f"{str(target)!r} already exists and is not empty", fix="choose another NAME or --out DIR")
    for what, names in (taken or {}).items():
        if name in names:
            raise ReprevalError(
                f"{what} {name!r} already exists",
                fix=f"choose another NAME (see `repreval plugins`, `repreval list {KINDS[kind].list_kind}`)",
            )


def write_plugin(name: str, kind: str, out: Path | str = ".", taken: dict[str, list[str]] | None = None) -> list[Path]:
    """Write the plugin package ``out/name``; return the files written (checked by :func:`check_request`)."""
    target = Path(out) / name
    check_request(name, kind, target, taken)
    spec = KINDS[kind]
    words = name.split("_")
    values = {
        "name": name,
        "kind": spec.registry or kind,
        "package": f"{name}_repreval",  # not repreval_*: that prefix is repreval's own (repreval_builtins)
        "distribution": f"{name.replace('_', '-')}-repreval",
        "class_name": "".join(word.capitalize() for word in words if word) + spec.class_suffix,
        "hook": spec.hook,
        "kind_text": spec.text,
        "list_kind": spec.list_kind,
    }
    for key in ("usage", "check_arguments", "summary"):
        values[key] = Template(getattr(spec, key)).substitute(values)
    values["summary"] = f"A repreval {spec.text}: {values['summary']}."
    templates = files("repreval") / "templates" / "new_plugin"
    written = []
    for source, destination in LAYOUT.items():
        text = templates.joinpath(*source.format(kind=kind).split("/")).read_text(encoding="utf-8")
        path = target / Template(destination).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values), encoding="utf-8")
        written.append(path)
    return written
