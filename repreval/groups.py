"""Seed groups: one variant declared with ``seeds: K`` stands for K networks.

``{random: {seeds: 20}}`` in a suite runs ``random[seed=0]`` ... ``random[seed=19]`` (any other option kept:
``{random: {init: pytorch, seeds: 5}}`` runs ``random[init=pytorch,seed=0]`` ...), and a claim or a board names
the group as ``random[seeds=20]``. Comparisons against a group treat the *networks* as the replicates (see
:mod:`repreval.comparisons`); boards show the group as one row.

Labels only: membership follows from the group's label, so records need no extra field. Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: The option that makes a variant a group of seeded copies, and the option each copy gets instead
SEEDS = "seeds"
SEED = "seed"
#: The most copies a group may have
MAX_SEEDS = 1000

_LABEL = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<options>[^\[\]]*)\])?$")


def split_label(label: str) -> tuple[str, dict[str, str]] | None:
    """``random[init=pytorch,seeds=5]`` -> ``("random", {"init": "pytorch", "seeds": "5"})``; None when the
    label is not of that form."""
    match = _LABEL.match(label)
    if match is None:
        return None
    options: dict[str, str] = {}
    for part in (match["options"] or "").split(","):
        if not part:
            continue
        key, equals, value = part.partition("=")
        if not equals:
            return None
        options[key.strip()] = value.strip()
    return match["name"], options


def make_label(name: str, options: Mapping[str, object]) -> str:
    """The label a plan gives a variant with ``options`` (sorted by key, as expansions are)."""
    if not options:
        return name
    return f"{name}[" + ",".join(f"{key}={value}" for key, value in sorted(options.items())) + "]"


def seeds_of(label: str) -> int | None:
    """K when ``label`` names a group of K seeded copies (``...seeds=K...``), else None."""
    parts = split_label(label)
    if parts is None or SEEDS not in parts[1]:
        return None
    try:
        count = int(parts[1][SEEDS])
    except ValueError:
        return None
    return count if 0 < count <= MAX_SEEDS else None


def is_group(label: str) -> bool:
    """Whether ``label`` names a seed group."""
    return seeds_of(label) is not None


def members(label: str) -> list[str]:
    """The labels of a group's copies (``random[seeds=3]`` -> ``random[seed=0]``, ``random[seed=1]``,
    ``random[seed=2]``); ``[label]`` for a label that is not a group."""
    count = seeds_of(label)
    if count is None:
        return [label]
    name, options = split_label(label) or (label, {})
    base = {key: value for key, value in options.items() if key not in (SEEDS, SEED)}
    return [make_label(name, base | {SEED: seed}) for seed in range(count)]


def canonical(label: str) -> str:
    """``label`` with its options sorted (``random[seeds=5,init=pytorch]`` -> ``random[init=pytorch,seeds=5]``),
    so a group named in a claim matches the group a suite declares however the options were ordered."""
    parts = split_label(label)
    return label if parts is None else make_label(*parts)


def group_of(label: str, groups: list[str]) -> str | None:
    """The group among ``groups`` (group labels) that ``label`` is a copy of, or None."""
    for group in groups:
        if label in members(group):
            return group
    return None
