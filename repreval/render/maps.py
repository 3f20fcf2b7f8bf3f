"""Attribution maps drawn for the report and the site: for each model and saliency method, a grid with a row per
input (two real inputs and a noise input) of each variant (trained and random first) and a column per probe
layer, each map the mean over embedding components of the channel-aggregated attributions, over the input.

The runner stores the maps of each variant as ``DIR/maps/<model>-<variant>.npz``; this module draws
``DIR/plots/maps-<model>-<saliency>.png`` from them, so a report renders without the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..drawings import pictured_variants as pictured
from ..drawings import slug

INPUT_NAMES = ("input 1", "input 2", "noise")
#: About how many map columns one picture holds: with many layers, trained and random only
MAX_COLUMNS = 12


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input [C, H, W] (normalised) as something imshow draws: min-max scaled, gray for one channel."""
    image = image[:3].transpose(1, 2, 0)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    return (image[..., 0], "gray") if image.shape[2] == 1 else (image, None)


def draw_maps(directory: str | Path) -> list[Path]:
    """Draw every model × saliency picture of the folder's stored maps; return the PNGs written."""
    from matplotlib.figure import Figure

    directory = Path(directory)
    stored = sorted((directory / "maps").glob("*.npz")) if (directory / "maps").is_dir() else []
    by_model: dict[str, dict[str, dict]] = {}
    for path in stored:
        model, _, variant = path.stem.partition("--")
        with np.load(path) as data:
            by_model.setdefault(model, {})[variant] = {key: data[key] for key in data.files}
    written = []
    for model, variants in by_model.items():
        keys = [key for key in variants[pictured(list(variants))[0]] if "|" in key]
        layer_count = max(1, len({key.split("|", 1)[1] for key in keys}))
        chosen = pictured(list(variants))[: max(2, MAX_COLUMNS // layer_count)]  # readable: about 12 columns
        methods = list(dict.fromkeys(key.split("|", 1)[0] for key in keys))
        for method in methods:
            layers = [key.split("|", 1)[1] for key in keys if key.startswith(method + "|")]
            columns = [(variant, layer) for variant in chosen for layer in layers]  # trained beside random
            count = len(variants[chosen[0]]["inputs"])
            figure = Figure(figsize=(1.4 * (len(columns) + 1) + 0.6, 1.45 * count + 0.8))
            axes = figure.subplots(count, len(columns) + 1, squeeze=False)
            for i in range(count):
                image, cmap = _display(variants[chosen[0]]["inputs"][i])
                axes[i][0].imshow(image, cmap=cmap)
                axes[i][0].set_ylabel(INPUT_NAMES[i] if i < len(INPUT_NAMES) else str(i), fontsize=7)
                for c, (variant, layer) in enumerate(columns, start=1):
                    found = variants[variant].get(f"{method}|{layer}")
                    if found is not None:
                        axes[i][c].imshow(found[i], cmap="inferno")
                    if i == 0:
                        axes[i][c].set_title(f"{variant}\n{layer}", fontsize=7)
            for row in axes:
                for cell in row:
                    cell.set_xticks([])
                    cell.set_yticks([])
            axes[0][0].set_title("input", fontsize=7)
            dim, used = (int(v) for v in variants[chosen[0]]["components"])
            averaged = f"mean over {dim} components" if used == dim else f"mean over {used} of {dim} components"
            figure.suptitle(f"{model} · {method}: {averaged}", fontsize=8)
            figure.tight_layout()
            path = directory / "plots" / f"maps-{slug(model)}-{slug(method)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            figure.savefig(path, dpi=100)
            written.append(path)
    return written


#: Panels per row of ``show``'s picture (the input first)
SHOW_COLUMNS = 5


def draw_one(image: np.ndarray, maps: dict[str, np.ndarray], title: str, path: Path) -> Path:
    """One input [C, H, W] in [0, 1] and its maps [h, w] by label (``repreval show``), at most ``SHOW_COLUMNS``
    panels a row; a label's ``method · ...`` parts go on two lines."""
    from matplotlib.figure import Figure

    columns = min(len(maps) + 1, SHOW_COLUMNS)
    rows = -(-(len(maps) + 1) // columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows + 0.3))
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    shown, cmap = _display(image)
    axes[0].imshow(shown, cmap=cmap)
    axes[0].set_title("input", fontsize=8)
    for cell, (name, values) in zip(axes[1:], maps.items()):
        cell.imshow(values, cmap="inferno")
        cell.set_title(name.replace(" · ", "\n", 1), fontsize=7)
    for cell in axes:
        cell.set_xticks([])
        cell.set_yticks([])
    for cell in axes[len(maps) + 1 :]:
        cell.set_axis_off()
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
