"""Landmarks (named image points) and the location instability of filters (Zhang, Wu, Zhu 2018).

Landmarks come from a file (``landmarks: PATH`` on a suite dataset: CSV or JSON rows ``image, name, x, y``) or
are derived from the images (``landmarks: ink``: for dark-background drawings such as MNIST digits, the
topmost, bottommost, leftmost and rightmost ink points and the ink's centroid). Either way they end up as
[N, K, 2] pixel coordinates (x, y) of the image a network reads, NaN where a point is missing; the instability
measure reads only those, never how they were obtained.
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


def peak_positions(maps: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where each map [N, K, h, w] peaks, as image pixel coordinates [N, K, 2] (x, y) of the centre of the peak
    cell's footprint on an image of ``image_size`` (H, W), and whether the map fires at all ([N, K], max > 0)."""
    height, width = maps.shape[-2:]
    flat = maps.flatten(2)
    peak = flat.argmax(dim=2)
    rows, cols = (peak // width).float(), (peak % width).float()
    image_h, image_w = image_size
    xs = (cols + 0.5) * image_w / width - 0.5
    ys = (rows + 0.5) * image_h / height - 0.5
    return torch.stack([xs, ys], dim=2), flat.amax(dim=2) > 0


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
