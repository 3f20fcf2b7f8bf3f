"""The explainer's picture: for a few held-out images, where the interpretable filters fire (their maps over
the input, peak marked) beside the performer's own filters at the same layer, landmarks as dots.

The run stores what the picture shows as ``DIR/pictures/<name>.npz``
(:func:`repreval.drawings.explainer_picture_data`); the report draws ``DIR/pictures/<name>.png`` from it
(:func:`draw_parts_picture`), so a report renders without the model."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

#: Filters drawn per side: the ones that fire most on the shown images
SHOWN_FILTERS = 5


def _strongest(maps: Tensor, count: int) -> list[int]:
    """The ``count`` filters of maps [N, K, h, w] with the highest mean peak over the N images."""
    peaks = maps.flatten(2).amax(dim=2).mean(dim=0)
    return peaks.argsort(descending=True)[:count].tolist()


def draw_parts_picture(data: Path, path: Path, title: str = "") -> Path:
    """Draw the picture ``path`` from the data a run stored (``data``, an ``.npz``) under the title stored with it
    (``title`` if it has none)."""
    import numpy as np

    with np.load(data) as stored:
        arrays = {name: stored[name] for name in stored.files}
    stored_title = arrays.pop("title", None)
    picture = {name: torch.from_numpy(array) for name, array in arrays.items()}
    return parts_picture(picture, path, title if stored_title is None else str(stored_title))


def parts_picture(picture: dict[str, Tensor], path: Path, title: str) -> Path:
    """A grid PNG: one row per image; the input, then ``SHOWN_FILTERS`` interpretable filters, then as many of
    the performer's filters, each map upsampled to the image and drawn over it with its peak marked (×)."""
    from matplotlib.figure import Figure

    images = picture["images"]
    count, height, width = len(images), images.shape[-2], images.shape[-1]
    sides = [("explainer", picture["part_maps"]), ("performer", picture["performer_maps"])]
    chosen = [(side, maps, _strongest(maps, SHOWN_FILTERS)) for side, maps in sides]
    columns = 1 + sum(len(filters) for _, _, filters in chosen)
    figure = Figure(figsize=(1.3 * columns, 1.4 * count + 0.5))
    axes = figure.subplots(count, columns, squeeze=False)
    for row in range(count):
        image = images[row].permute(1, 2, 0).clamp(0, 1).numpy()
        gray = image.shape[2] == 1
        shown = image[..., 0] if gray else image
        cell = axes[row][0]
        cell.imshow(shown, cmap="gray" if gray else None)
        if picture["landmarks"].numel():
            points = picture["landmarks"][row]
            cell.scatter(points[:, 0], points[:, 1], s=8, c="cyan")
        column = 1
        for side, maps, filters in chosen:
            for index in filters:
                heat = F.interpolate(maps[row : row + 1, index : index + 1], size=(height, width), mode="nearest")[0, 0]
                cell = axes[row][column]
                cell.imshow(shown, cmap="gray" if gray else None)
                cell.imshow(heat.numpy(), cmap="inferno", alpha=0.6)
                if bool(heat.max() > 0):
                    flat = int(torch.argmax(maps[row, index]))
                    y, x = divmod(flat, maps.shape[-1])
                    cell.scatter(
                        [(x + 0.5) * width / maps.shape[-1] - 0.5],
                        [(y + 0.5) * height / maps.shape[-2] - 0.5],
                        marker="x",
                        s=30,
                        c="lime",
                    )
                if row == 0:
                    cell.set_title(f"{side} {index}", fontsize=7)
                column += 1
    for row_axes in axes:
        for cell in row_axes:
            cell.set_xticks([])
            cell.set_yticks([])
    axes[0][0].set_title("input", fontsize=7)
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
