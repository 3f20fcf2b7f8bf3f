"""Where a run keeps what reports draw, named alike by the runner (which stores) and the renderers (which draw):
attribution maps per model variant (``DIR/maps``) and explainer pictures (``DIR/pictures``: the data, and the
PNG drawn from it)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

#: Most variants one picture shows (trained and random first, then the others in name order)
PICTURE_VARIANTS = 4


def slug(text: str) -> str:
    """``text`` as a lowercase file-name part: runs of other characters become ``-``, at most 80 characters."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80]


def maps_file(directory: Path, model: str, variant: str) -> Path:
    """Where the runner keeps the maps of one model variant."""
    return Path(directory) / "maps" / f"{slug(model)}--{slug(variant)}.npz"


def pictured_variants(variants: list[str]) -> list[str]:
    """The variants a picture shows: trained and random first, then the others in name order."""
    return sorted(variants, key=lambda variant: ({"trained": 0, "random": 1}.get(variant, 2), variant))[
        :PICTURE_VARIANTS
    ]


def explainer_picture(directory: Path, model: str, variant: str, layer: str, explainer: str) -> Path:
    """Where the report draws the picture of one explainer (``DIR/pictures/...png``) from its data
    (:func:`explainer_picture_data`); names too long for a file name end in a hash of the whole."""
    text = "-".join((model, variant, layer, explainer))
    name = slug(text)
    if len(re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")) > len(name):
        name = name[:69] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return directory / "pictures" / f"{name}.png"


def explainer_picture_data(directory: Path, model: str, variant: str, layer: str, explainer: str) -> Path:
    """Where a run keeps what the picture of one explainer shows (``DIR/pictures/...npz``: the images and maps,
    see :class:`repreval.explain.Measures`): :func:`explainer_picture`'s name, ending in ``.npz``."""
    return explainer_picture(directory, model, variant, layer, explainer).with_suffix(".npz")
