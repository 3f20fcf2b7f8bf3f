"""Landmarks (named image points) and the location instability of filters (Zhang, Wu, Zhu 2018).

Landmarks come from a file (``landmarks: PATH`` on a suite dataset: CSV or JSON rows ``image, name, x, y``) or
are derived from the images (``landmarks: ink``: for dark-background drawings such as MNIST digits, the
topmost, bottommost, leftmost and rightmost ink points and the ink's centroid). Either way they end up as
[N, K, 2] pixel coordinates (x, y) of the image a network reads, NaN where a point is missing; the instability
measure reads only those, never how they were obtained.

Instability alone does not tell a part detector from a filter that locates nothing, so the module also gives
baselines that locate nothing (a filter fixed at a cell, one peaking at random cells) and tells which filters'
peaks move with the object (:func:`moving_filters`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from .api import InputSpec
from .errors import ReprevalError

#: ``landmarks: ink``: the points derived from each image's ink (pixels above INK_THRESHOLD)
INK_LANDMARKS = ("top", "bottom", "left", "right", "centroid")
INK_THRESHOLD = 0.5
#: Bounds on a landmark file: its size, its distinct landmark names, and the image indices it may give.
MAX_LANDMARK_BYTES = 16 * 2**20
MAX_LANDMARK_NAMES = 1_000
MAX_IMAGE_INDEX = 10**9
#: moving_filters: a filter is stuck when one cell holds at least STUCK_SHARE of the images where it fires; it is
#: judged when it fires on at least MOVING_MIN_IMAGES images; its peak follows a landmark when the one-sided p of
#: the correlation, Bonferroni-corrected over landmarks × 2 axes, is below MOVING_ALPHA
STUCK_SHARE = 0.9
MOVING_MIN_IMAGES = 10
MOVING_ALPHA = 0.05
#: modal_cells' cell (row, col) for a filter that never fires
NO_CELL = (-1, -1)
#: the most image × filter × landmark distances the instability baselines hold at once (memory stays bounded)
DISTANCES_AT_ONCE = 2**22


def ink_landmarks(images: Tensor, threshold: float = INK_THRESHOLD) -> Tensor:
    """[N, 5, 2]: the (x, y) of the topmost, bottommost, leftmost and rightmost ink pixels (ties: the mean of
    the extreme row's or column's ink) and of the ink's intensity-weighted centroid; NaN for an image without
    ink. ``images`` [N, C, H, W] in [0, 1], ink bright on dark (channels averaged)."""
    gray = images.float().mean(dim=1)  # [N, H, W]
    points = torch.full((len(gray), len(INK_LANDMARKS), 2), math.nan)
    for n, image in enumerate(gray):
        ink = image > threshold
        if not ink.any():
            continue
        rows, cols = torch.nonzero(ink, as_tuple=True)
        rows_f, cols_f = rows.float(), cols.float()
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        points[n, 0] = torch.stack([cols_f[rows == top].mean(), top.float()])
        points[n, 1] = torch.stack([cols_f[rows == bottom].mean(), bottom.float()])
        points[n, 2] = torch.stack([left.float(), rows_f[cols == left].mean()])
        points[n, 3] = torch.stack([right.float(), rows_f[cols == right].mean()])
        weights = image.clamp_min(0) * ink
        ys, xs = torch.meshgrid(
            torch.arange(image.shape[0], dtype=torch.float32),
            torch.arange(image.shape[1], dtype=torch.float32),
            indexing="ij",
        )
        total = weights.sum()
        points[n, 4] = torch.stack([(weights * xs).sum() / total, (weights * ys).sum() / total])
    return points


def read_landmark_file(path: str | Path, where: str = "landmarks") -> list[dict]:
    """Rows ``{image, name, x, y}`` of a CSV (with a header) or JSON (a list of objects) file. ``image`` is the
    dataset index of the image (ASCII digits, below :data:`MAX_IMAGE_INDEX`) or its file name; x and y are
    finite pixel coordinates of the image as stored. The file is at most :data:`MAX_LANDMARK_BYTES` and names
    at most :data:`MAX_LANDMARK_NAMES` landmarks; anything else is a one-line ReprevalError."""
    from .files import read_bounded, regular_file

    path = Path(path)
    regular_file(path, "landmark file", where)
    content = read_bounded(path, "landmark file", where, MAX_LANDMARK_BYTES)
    try:
        text = content.decode("utf-8")
        rows = json.loads(text) if path.suffix.lower() == ".json" else list(csv.DictReader(io.StringIO(text)))
    except (UnicodeDecodeError, ValueError, RecursionError, csv.Error) as exc:  # ValueError: JSON, huge integers
        problems = {RecursionError: "nested too deeply", UnicodeDecodeError: "not UTF-8 text"}  # no byte quoted
        problem = problems.get(type(exc)) or (str(exc).splitlines() or ["damaged"])[0][:120]
        raise ReprevalError(f"cannot read landmark file {path.name!r}: {problem}", where=where) from None
    if not isinstance(rows, list):
        raise ReprevalError("a JSON landmark file holds a list of {image, name, x, y}", where=where)
    checked = [_landmark_row(row, f"row {i + 1} of {path.name}", where) for i, row in enumerate(rows)]
    if not checked:
        raise ReprevalError(f"landmark file {path.name} has no rows", where=where)
    names = {row["name"] for row in checked}
    if len(names) > MAX_LANDMARK_NAMES:
        raise ReprevalError(
            f"landmark file {path.name} names {len(names):,} landmarks, more than {MAX_LANDMARK_NAMES:,}",
            where=where,
            fix="keep the landmarks the measure should use",
        )
    return checked


def _landmark_row(row: object, label: str, where: str) -> dict:
    """One checked row ``{image, name, x, y}``: image and name as strings, x and y as finite floats."""
    if not isinstance(row, dict) or not {"image", "name", "x", "y"} <= set(row):
        raise ReprevalError(f"{label} lacks image, name, x or y", where=where, fix="columns: image,name,x,y")
    image, name = row["image"], row["name"]
    if isinstance(image, int) and not isinstance(image, bool) and 0 <= image < MAX_IMAGE_INDEX:
        image = str(image)
    if not isinstance(image, str) or not image or not isinstance(name, str):
        raise ReprevalError(f"{label}: image and name must be text or an image index", where=where)
    if image.isdecimal() and not (image.isascii() and len(image) <= 9 and int(image) < MAX_IMAGE_INDEX):
        raise ReprevalError(
            f"{label}: image index {image[:20]!r} is not an ASCII number below {MAX_IMAGE_INDEX:,}", where=where
        )
    try:
        x, y = _coordinate(row["x"]), _coordinate(row["y"])
    except (TypeError, ValueError):
        raise ReprevalError(f"{label}: x and y must be finite numbers", where=where) from None
    return {"image": image, "name": name, "x": x, "y": y}


def _coordinate(value: object) -> float:
    """A finite float from a number or numeric text (not a bool); ValueError or TypeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or len(str(value)) > 40:
        raise TypeError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def landmarks_for(
    rows: list[dict], indices: list[int], files: list[str] | None, where: str = "landmarks"
) -> tuple[Tensor, tuple[str, ...]]:
    """[N, K, 2] for the dataset images at ``indices`` (in pixels of the stored images) and the K names. A row's
    ``image`` is matched against the dataset index, or (when the dataset lists its ``files``) the file's full
    path, path relative to a parent folder, or name."""
    names = tuple(dict.fromkeys(row["name"] for row in rows))
    name_index = {name: k for k, name in enumerate(names)}
    by_key: dict[str, int] = {}
    if files is not None:
        for position_in_dataset, file in enumerate(files):
            parts = Path(file).parts
            for start in range(len(parts)):
                by_key.setdefault(Path(*parts[start:]).as_posix(), position_in_dataset)
    position = {index: n for n, index in enumerate(indices)}
    points = torch.full((len(indices), len(names), 2), math.nan)
    unmatched = 0
    for row in rows:
        key = row["image"]
        index: int | None = int(key) if key.isascii() and key.isdecimal() else by_key.get(Path(key).as_posix())
        if index is None:
            unmatched += 1
            continue
        if index in position:
            points[position[index], name_index[row["name"]]] = torch.tensor([row["x"], row["y"]])
    if unmatched == len(rows):
        raise ReprevalError(
            "no landmark row names an image of the dataset",
            where=where,
            fix="give 'image' as the dataset index or the image's file name",
        )
    return points, names


def fit_landmarks(points: Tensor, sizes: list[tuple[int, int]], spec: InputSpec) -> Tensor:
    """Move landmarks [N, K, 2] of images of ``sizes`` (H, W) as :func:`repreval.data.fit_to_input` moves the
    images: a straight resize, or (with ``crop_pct``) a resize of the shorter side then a centre crop. Pixel
    coordinates are of pixel centres (a point at x lies x + 0.5 pixels from the left edge)."""
    moved = points.clone()
    for n, (height, width) in enumerate(sizes):
        if spec.crop_pct:
            scaled = int(round(min(spec.height, spec.width) / spec.crop_pct))
            scale_y = scale_x = scaled / min(height, width)
            new_h, new_w = round(height * scale_y), round(width * scale_x)
            offset_y, offset_x = (new_h - spec.height) / 2, (new_w - spec.width) / 2
        else:
            scale_y, scale_x = spec.height / height, spec.width / width
            offset_y = offset_x = 0.0
        moved[n, :, 0] = (points[n, :, 0] + 0.5) * scale_x - 0.5 - offset_x
        moved[n, :, 1] = (points[n, :, 1] + 0.5) * scale_y - 0.5 - offset_y
    return moved


def peak_cells(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Where each map [N, K, h, w] peaks, as its cell (row, col) [N, K, 2] (the first maximum in row-major
    order), and whether the map fires at all ([N, K], max > 0)."""
    if maps.dim() != 4:
        raise ValueError(f"maps must be [N, K, h, w], not of shape {tuple(maps.shape)}")
    width = maps.shape[-1]
    flat = maps.flatten(2)
    peak = flat.argmax(dim=2)
    return torch.stack([peak // width, peak % width], dim=2), flat.amax(dim=2) > 0


def cell_centres(cells: Tensor, map_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """Image pixel coordinates (x, y) [..., 2] of the centre of each cell's footprint: cells (row, col) [..., 2]
    of an h×w map laid evenly over an image of ``image_size`` (H, W), pixel coordinates of pixel centres."""
    (height, width), (image_h, image_w) = map_size, image_size
    rows, cols = cells[..., 0].float(), cells[..., 1].float()
    xs = (cols + 0.5) * image_w / width - 0.5
    ys = (rows + 0.5) * image_h / height - 0.5
    return torch.stack([xs, ys], dim=-1)


def peak_positions(maps: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where each map [N, K, h, w] peaks, as image pixel coordinates [N, K, 2] (x, y) of the centre of the peak
    cell's footprint on an image of ``image_size`` (H, W), and whether the map fires at all ([N, K], max > 0)."""
    cells, fires = peak_cells(maps)
    return cell_centres(cells, (maps.shape[-2], maps.shape[-1]), image_size), fires


def location_instability(
    peaks: Tensor, fires: Tensor, landmarks: Tensor, image_size: tuple[int, int], min_images: int = 2
) -> Tensor:
    """Per filter [K]: the mean over landmarks of the standard deviation over images of
    ``||p_f(I) - p_k(I)|| / sqrt(H² + W²)``; images where the filter does not fire or the landmark is missing
    are left out, and a filter/landmark pair needs ``min_images`` images. NaN for a filter with no pair.

    ``peaks`` [N, K, 2] and ``fires`` [N, K] from :func:`peak_positions`; ``landmarks`` [N, L, 2]."""
    diagonal = math.hypot(*image_size)
    distance = (peaks[:, :, None, :] - landmarks[:, None, :, :]).norm(dim=3) / diagonal  # [N, K, L]
    usable = fires[:, :, None] & ~landmarks.isnan().any(dim=2)[:, None, :]
    count = usable.sum(dim=0)  # [K, L]
    values = torch.where(usable, distance, torch.zeros_like(distance))
    mean = values.sum(dim=0) / count.clamp_min(1)
    variance = (torch.where(usable, (distance - mean) ** 2, torch.zeros_like(distance))).sum(dim=0) / count.clamp_min(1)
    spread = torch.where(count >= min_images, variance.sqrt(), torch.full_like(variance, math.nan))
    return spread.nanmean(dim=1)


def fixed_position_instability(
    cells: Tensor,
    landmarks: Tensor,
    map_size: tuple[int, int],
    image_size: tuple[int, int],
    min_images: int = 2,
) -> Tensor:
    """Per cell [P]: the :func:`location_instability` of a filter that fires on every image and always peaks at
    that cell (row, col) of ``cells`` [P, 2] on the h×w map: what locating nothing scores there. NaN for
    :data:`NO_CELL`; any other cell outside the map is a ValueError. ``landmarks`` [N, L, 2]."""
    cells = torch.as_tensor(cells, dtype=torch.long)
    if cells.dim() != 2 or cells.shape[1] != 2:
        raise ValueError(f"cells must be [P, 2] (row, col), not of shape {tuple(cells.shape)}")
    no_cell = (cells == torch.tensor(NO_CELL)).all(dim=1)
    outside = ((cells < 0) | (cells >= torch.tensor(map_size))).any(dim=1) & ~no_cell
    if outside.any():
        row, col = cells[outside][0].tolist()
        raise ValueError(f"cell ({row}, {col}) lies outside the {map_size[0]}×{map_size[1]} map")
    positions = cell_centres(cells.clamp_min(0), map_size, image_size)  # [P, 2]
    peaks = positions[None].expand(len(landmarks), -1, -1)
    spread = _always_firing_instability(peaks, landmarks, image_size, min_images)
    return spread.masked_fill(no_cell, math.nan)


def random_position_instability(
    landmarks: Tensor,
    map_size: tuple[int, int],
    image_size: tuple[int, int],
    filters: int,
    seed: int,
    min_images: int = 2,
) -> Tensor:
    """Per filter [filters]: the :func:`location_instability` of filters that fire on every image of
    ``landmarks`` [N, L, 2] and peak at a cell of the h×w map drawn uniformly at random on each (a
    ``torch.Generator`` seeded with ``seed``: the same seed gives the same numbers)."""
    if filters < 1:
        raise ValueError(f"filters must be at least 1, not {filters}")
    height, width = map_size
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randint(height * width, (len(landmarks), filters), generator=generator)
    peaks = cell_centres(torch.stack([flat // width, flat % width], dim=2), map_size, image_size)
    return _always_firing_instability(peaks, landmarks, image_size, min_images)


def _always_firing_instability(
    peaks: Tensor, landmarks: Tensor, image_size: tuple[int, int], min_images: int
) -> Tensor:
    """:func:`location_instability` [P] of filters that fire on every image, peaks [N, P, 2], a slice at a time."""
    count, filters = peaks.shape[:2]
    step = max(1, DISTANCES_AT_ONCE // max(1, count * landmarks.shape[1]))
    parts = []
    for start in range(0, filters, step):
        chunk = peaks[:, start : start + step]
        fires = torch.ones(chunk.shape[:2], dtype=torch.bool)
        parts.append(location_instability(chunk, fires, landmarks, image_size, min_images))
    return torch.cat(parts) if parts else torch.empty(0)


def modal_cells(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Per filter of ``maps`` [N, K, h, w]: the cell (row, col) [K, 2] where it peaks most often over the images
    where it fires (ties: the first in row-major order) and the share [K] (float64) of those images peaking there.
    :data:`NO_CELL` and a NaN share for a filter that never fires."""
    cells, fires = peak_cells(maps)
    height, width = maps.shape[-2:]
    flat = (cells[..., 0] * width + cells[..., 1]).T  # [K, N]
    counts = torch.zeros(flat.shape[0], height * width, dtype=torch.long)
    counts.scatter_add_(1, flat, fires.T.long())
    top = counts.argmax(dim=1)
    firing = fires.sum(dim=0)
    modal = torch.stack([top // width, top % width], dim=1)
    modal[firing == 0] = torch.tensor(NO_CELL)
    share = counts.gather(1, top[:, None])[:, 0].double() / firing  # float64: a share of 0.9 is the literal 0.9
    return modal, share


def moving_filters(
    maps: Tensor, landmarks: Tensor, image_size: tuple[int, int], min_images: int = MOVING_MIN_IMAGES
) -> Tensor:
    """Per filter of ``maps`` [N, K, h, w]: 1.0 when its peak moves with the object, else 0.0; NaN for a filter
    firing on fewer than ``min_images`` images. Moving means both: its modal cell (:func:`modal_cells`) holds
    less than :data:`STUCK_SHARE` of its firing images, and for some landmark of ``landmarks`` [N, L, 2] and
    axis (x or y) the peak's coordinate (:func:`peak_positions`) correlates positively with the landmark's over
    the images where the filter fires and the landmark exists (Pearson; one-sided p below :data:`MOVING_ALPHA`
    / (2 L), Bonferroni). A constant series correlates with nothing."""
    peaks, fires = peak_positions(maps, image_size)
    _, share = modal_cells(maps)
    p = _correlation_p(peaks, fires, landmarks)  # [K, L, 2]
    follows = (p < MOVING_ALPHA / max(1, 2 * landmarks.shape[1])).flatten(1).any(dim=1)
    moving = ((share < STUCK_SHARE) & follows).float()
    return moving.masked_fill(fires.sum(dim=0) < min_images, math.nan)


def _correlation_p(peaks: Tensor, fires: Tensor, landmarks: Tensor) -> Tensor:
    """[K, L, 2]: one-sided p (positive correlation) of Pearson's r over images between filter k's peak
    coordinate and landmark l's on the same axis (x, y), by Student's t with n - 2 degrees of freedom; images
    where the filter does not fire or the landmark is missing left out. 1 where a series is constant or has
    fewer than 3 images."""
    from scipy.special import stdtr

    usable = (fires[:, :, None] & ~landmarks.isnan().any(dim=2)[:, None, :])[..., None]  # [N, K, L, 1]
    x = peaks.double()[:, :, None, :].expand(-1, -1, landmarks.shape[1], -1)  # [N, K, L, 2]
    y = landmarks.double()[:, None, :, :].expand(-1, peaks.shape[1], -1, -1)
    count = usable.sum(dim=0)  # [K, L, 1]
    dx, dy = _centred(x, usable, count), _centred(y, usable, count)
    varies = _varies(x, usable) & _varies(y, usable) & (count >= 3)
    r = (dx * dy).sum(dim=0) / ((dx**2).sum(dim=0) * (dy**2).sum(dim=0)).sqrt()
    r = torch.where(varies, r, torch.zeros_like(r)).clamp(-1, 1)
    df = (count - 2).clamp_min(1).double().expand_as(r)
    t = r * (df / (1 - r**2)).sqrt()  # r = 1: t = inf, p = 0
    p = torch.from_numpy(stdtr(df.numpy(), (-t).numpy()))
    return torch.where(varies, p, torch.ones_like(p))


def _centred(values: Tensor, usable: Tensor, count: Tensor) -> Tensor:
    """``values`` [N, ...] minus their mean over the usable images, 0 elsewhere."""
    kept = torch.where(usable, values, torch.zeros_like(values))
    return torch.where(usable, values - kept.sum(dim=0) / count.clamp_min(1), torch.zeros_like(values))


def _varies(values: Tensor, usable: Tensor) -> Tensor:
    """Whether ``values`` [N, ...] take two different values over the usable images (not a rounding error of a
    mean: the extremes differ)."""
    highest = torch.where(usable, values, torch.full_like(values, -math.inf)).amax(dim=0)
    lowest = torch.where(usable, values, torch.full_like(values, math.inf)).amin(dim=0)
    return highest > lowest
