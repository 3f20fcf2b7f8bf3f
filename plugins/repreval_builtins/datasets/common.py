"""Option checks and tensor helpers shared by the dataset sources."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repreval.api import PluginOptionError, ReprevalError, file_kind, shown

if TYPE_CHECKING:  # torch is imported where images are loaded: registering the datasets stays cheap
    from torch import Tensor

#: File extensions read as images (lower case, with the dot).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
#: The most images (or texts) a dataset option may ask for: ``noise``'s ``count``.
MAX_COUNT = 10_000_000


def path_option(value, option: str) -> Path:
    """A path option as a :class:`Path` (``~`` expanded); PluginOptionError for anything but a string or path."""
    if not isinstance(value, (str, os.PathLike)):
        raise PluginOptionError(f"{option!r} must be a path, got {type(value).__name__} {value!r}")
    return Path(value).expanduser()


def bool_option(value, option: str) -> bool:
    """``value`` if it is a bool; PluginOptionError otherwise."""
    if not isinstance(value, bool):
        raise PluginOptionError(f"{option!r} must be true or false, got {type(value).__name__} {value!r}")
    return value


def _is_numpy_integer(value) -> bool:
    numpy = sys.modules.get("numpy")  # a numpy integer exists only once numpy is imported: no need to import it
    return numpy is not None and isinstance(value, numpy.integer)


def int_option(value, option: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int (numpy integers too); PluginOptionError if not an integer, ReprevalError if below
    ``minimum`` or above ``maximum``."""
    if isinstance(value, bool) or not (isinstance(value, int) or _is_numpy_integer(value)):
        raise PluginOptionError(f"{option!r} must be an integer, got {type(value).__name__} {shown(value)}")
    number = int(value)
    if number < minimum:
        raise ReprevalError(
            f"{option!r} must be at least {minimum}, got {shown(number)}", fix=f"set '{option}' to {minimum} or more"
        )
    if maximum is not None and number > maximum:
        raise ReprevalError(
            f"{option!r} must be at most {maximum:,}, got {shown(number)}", fix=f"set '{option}' to {maximum:,} or less"
        )
    return number


PROBLEMS = {
    "missing": "does not exist",
    "file": "is a file, not a directory",
    "directory": "is a directory, not a file",
    "special": "is not a regular file or directory (a FIFO, device or socket)",
}


def existing_directory(path: Path, option: str, dataset: str) -> Path:
    """``path`` if it is a directory; a ReprevalError saying what is there instead otherwise."""
    kind = file_kind(path, option, dataset)
    if kind == "directory":
        return path
    raise ReprevalError(f"{dataset}: {option} {shown(path)} {PROBLEMS[kind]}", fix=f"point '{option}' at a directory")


def existing_file(path: Path, option: str, dataset: str) -> Path:
    """``path`` if it is a regular file; a ReprevalError saying what is there instead otherwise."""
    kind = file_kind(path, option, dataset)
    if kind == "file":
        return path
    raise ReprevalError(f"{dataset}: {option} {shown(path)} {PROBLEMS[kind]}", fix=f"point '{option}' at a file")


def check_indices(indices: Sequence[int], size: int) -> list[int]:
    """``indices`` as ints; IndexError for any outside ``[0, size)`` (negative ones do not wrap)."""
    checked = [int(i) for i in indices]
    bad = [i for i in checked if not 0 <= i < size]
    if bad:
        raise IndexError(f"indices {bad[:5]} out of range for a dataset of {size} images")
    return checked


def batch(images: list[Tensor]) -> Tensor | list[Tensor]:
    """One [N, C, H, W] tensor when all images share a shape, else the list as it is."""
    import torch

    if images and all(image.shape == images[0].shape for image in images):
        return torch.stack(images)
    return images


def label_tensor(labels: Iterable[int]) -> Tensor:
    """``labels`` as an int64 tensor [N]."""
    import torch

    return torch.tensor(list(labels), dtype=torch.long)
