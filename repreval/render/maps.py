"""Attribution maps drawn for the report and the site: for each model and saliency method, a grid with a row per
input (two real inputs and a noise input) of each variant (trained and random first) and a column per probe
layer, each map the mean over embedding components of the channel-aggregated attributions, over the input.

The runner stores the maps of each variant as ``DIR/maps/<model>-<variant>.npz``; this module draws
``DIR/plots/maps-<model>-<saliency>.png`` from them, so a report renders without the model. The grid is one
image composed with numpy (each map colour-mapped on its own scale, as imshow would) under text labels: one
axes instead of one per map keeps drawing a fixed cost of a fraction of a second per picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..drawings import pictured_variants as pictured
from ..drawings import slug

INPUT_NAMES = ("input 1", "input 2", "noise")
#: About how many map columns one picture holds: with many layers, trained and random only
MAX_COLUMNS = 12
#: Width of one cell of the grid (inches, at 100 dpi), and the white gap beside it as a share of the cell
#: (twice that before each variant's columns)
CELL_INCHES, GAP_SHARE = 1.2, 0.06
#: Margins around the grid (inches): the row labels on the left; the title and two-line column titles on top
LEFT_INCHES, RIGHT_INCHES, TOP_INCHES, BOTTOM_INCHES = 0.3, 0.1, 0.62, 0.08


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input [C, H, W] (normalised) as something imshow draws: min-max scaled, gray for one channel."""
    image = image[:3].transpose(1, 2, 0)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    return (image[..., 0], "gray") if image.shape[2] == 1 else (image, None)


def _input_rgb(image: np.ndarray) -> np.ndarray:
    """An input [C, H, W] as 8-bit RGB [H, W, 3], scaled as :func:`_display` scales it."""
    shown, _ = _display(image)
    shown = np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown
    return np.round(shown * 255).astype(np.uint8)


def _map_rgb(values: np.ndarray) -> np.ndarray:
    """A map [h, w] as 8-bit RGB in inferno, scaled from its own minimum to its maximum as imshow scales it (a
    constant map is the colormap's first colour); non-finite values are left white."""
    from matplotlib import colormaps

    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = (values - low) / (high - low) if high > low else np.zeros(values.shape)
    rgb = colormaps["inferno"](scaled, bytes=True)[..., :3]
    rgb[~finite] = 255
    return rgb


def _resized(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image [h, w, 3] at [height, width] by nearest neighbour (each pixel repeated when sizes divide)."""
    rows = np.arange(height) * rgb.shape[0] // height
    columns = np.arange(width) * rgb.shape[1] // width
    return rgb[rows[:, None], columns[None, :]]


def _starts(count: int, size: int, gap: int, wide_before: set[int]) -> list[int]:
    """Where each of ``count`` cells of ``size`` pixels starts, ``gap`` pixels apart (twice that before the cells
    in ``wide_before``)."""
    starts, position = [], 0
    for index in range(count):
        position += (2 * gap if index in wide_before else gap) if index else 0
        starts.append(position)
        position += size
    return starts


def _mosaic(cells: list[list[np.ndarray | None]], wide_before: set[int]) -> tuple[np.ndarray, list[int], list[int]]:
    """Cells (rows of RGB images, None for a blank) as one white-gapped image, each resized to the largest
    height and width; with the pixel where each row and each column starts."""
    shapes = [cell.shape[:2] for row in cells for cell in row if cell is not None]
    height, width = max(shape[0] for shape in shapes), max(shape[1] for shape in shapes)
    gap = max(1, round(GAP_SHARE * width))
    tops = _starts(len(cells), height, gap, set())
    lefts = _starts(len(cells[0]), width, gap, wide_before)
    mosaic = np.full((tops[-1] + height, lefts[-1] + width, 3), 255, dtype=np.uint8)
    for top, row in zip(tops, cells):
        for left, cell in zip(lefts, row):
            if cell is not None:
                mosaic[top : top + height, left : left + width] = _resized(cell, height, width)
    return mosaic, tops, lefts


def _draw_grid(
    cells: list[list[np.ndarray | None]],
    titles: list[str],
    rows: list[str],
    wide_before: set[int],
    title: str,
    path: Path,
) -> Path:
    """Draw the grid of cells with a title above each column, a label left of each row and the picture's title."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import offset_copy

    mosaic, tops, lefts = _mosaic(cells, wide_before)
    cell_height, cell_width = mosaic.shape[0] - tops[-1], mosaic.shape[1] - lefts[-1]
    inches = CELL_INCHES / cell_width  # per mosaic pixel
    width, height = mosaic.shape[1] * inches, mosaic.shape[0] * inches
    size = (LEFT_INCHES + width + RIGHT_INCHES, BOTTOM_INCHES + height + TOP_INCHES)
    figure = Figure(figsize=size)
    axes = figure.add_axes((LEFT_INCHES / size[0], BOTTOM_INCHES / size[1], width / size[0], height / size[1]))
    axes.imshow(mosaic, aspect="auto")
    axes.set_axis_off()
    above = offset_copy(axes.transData, fig=figure, y=2, units="points")
    for left, text in zip(lefts, titles):
        axes.text(left - 0.5 + cell_width / 2, -0.5, text, transform=above, ha="center", va="bottom", fontsize=7)
    beside = offset_copy(axes.transData, fig=figure, x=-2, units="points")
    for top, text in zip(tops, rows):
        axes.text(-0.5, top - 0.5 + cell_height / 2, text, transform=beside, rotation=90, ha="right", va="center",
                  fontsize=7)  # fmt: skip
    figure.suptitle(title, fontsize=8, y=1 - 0.05 / size[1], va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _stored(directory: Path) -> dict[str, dict[str, dict]]:
    """The folder's stored maps: per model, per variant, its arrays by name."""
    stored = sorted((directory / "maps").glob("*.npz")) if (directory / "maps").is_dir() else []
    by_model: dict[str, dict[str, dict]] = {}
    for path in stored:
        model, _, variant = path.stem.partition("--")
        with np.load(path) as data:
            by_model.setdefault(model, {})[variant] = {key: data[key] for key in data.files}
    return by_model


def draw_maps(directory: str | Path) -> list[Path]:
    """Draw every model × saliency picture of the folder's stored maps; return the PNGs written."""
    directory = Path(directory)
    written = []
    for model, variants in _stored(directory).items():
        keys = [key for key in variants[pictured(list(variants))[0]] if "|" in key]
        layer_count = max(1, len({key.split("|", 1)[1] for key in keys}))
        chosen = pictured(list(variants))[: max(2, MAX_COLUMNS // layer_count)]  # readable: about 12 columns
        inputs = variants[chosen[0]]["inputs"]
        rows = [INPUT_NAMES[i] if i < len(INPUT_NAMES) else str(i) for i in range(len(inputs))]
        dim, used = (int(v) for v in variants[chosen[0]]["components"])
        averaged = f"mean over {dim} components" if used == dim else f"mean over {used} of {dim} components"
        for method in dict.fromkeys(key.split("|", 1)[0] for key in keys):
            layers = [key.split("|", 1)[1] for key in keys if key.startswith(method + "|")]
            columns = [(variant, layer) for variant in chosen for layer in layers]  # trained beside random
            found = [variants[variant].get(f"{method}|{layer}") for variant, layer in columns]
            cells: list[list[np.ndarray | None]] = [
                [_input_rgb(image), *(None if maps is None else _map_rgb(maps[i]) for maps in found)]
                for i, image in enumerate(inputs)
            ]
            titles = ["input"] + [f"{variant}\n{layer}" for variant, layer in columns]
            wide_before = {1 + k * len(layers) for k in range(len(chosen))}  # a wider gap before each variant
            path = directory / "plots" / f"maps-{slug(model)}-{slug(method)}.png"
            written.append(_draw_grid(cells, titles, rows, wide_before, f"{model} · {method}: {averaged}", path))
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
