"""Image files read with PIL: ``image_folder`` (one sub-folder per class) and ``image_files``."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repreval.api import DatasetSource, ImageSet, InputSpec, PluginOptionError, ReprevalError

from .common import (
    IMAGE_EXTENSIONS,
    batch,
    bool_option,
    check_indices,
    existing_directory,
    label_tensor,
    path_option,
)

if TYPE_CHECKING:  # PIL, numpy and torch are imported where images are read: registering stays cheap
    from torch import Tensor


def read_image(path: str | Path, grayscale: bool = False) -> Tensor:
    """One image file as a float [C, H, W] tensor in [0, 1]: RGB (C = 3), or L (C = 1) if ``grayscale``."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.array(image.convert("L" if grayscale else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ReprevalError(f"cannot read image {str(path)!r}: {exc}", fix="replace or remove the file") from None
    tensor = torch.from_numpy(pixels)
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.float().div(255)


def is_image(name: str) -> bool:
    """Whether file name ``name`` ends in an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_images(files: Sequence[str | Path], indices: Sequence[int], grayscale: bool) -> Tensor | list[Tensor]:
    """The files at ``indices`` as [N, C, H, W] when they share a size, else a list of [C, H, W]."""
    return batch([read_image(files[i], grayscale) for i in indices])


class ImageFolder(DatasetSource):
    """A folder of class sub-folders (torchvision's ImageFolder layout); labels = sorted class names.

    Options: ``path``; ``grayscale`` (default false: every image becomes RGB). Files are found
    recursively inside each class folder and sorted, as torchvision does; hidden folders are skipped.
    Only the requested images are decoded.
    """

    name = "image_folder"

    def __init__(self, path, grayscale: bool = False):
        self.root = existing_directory(path_option(path, "path"), "path", self.name)
        self.grayscale = bool_option(grayscale, "grayscale")
        class_folders = sorted(
            entry.name for entry in os.scandir(self.root) if entry.is_dir() and not entry.name.startswith(".")
        )
        if not class_folders:
            raise ReprevalError(
                f"image_folder: {str(self.root)!r} has no class sub-folders",
                fix="use the layout PATH/<class>/<image>, or the 'image_files' dataset for loose images",
            )
        self.class_names = tuple(class_folders)
        self.files: list[str] = []
        self.labels: list[int] = []
        for label, class_name in enumerate(self.class_names):
            class_files = self._image_files(self.root / class_name)
            if not class_files:
                raise ReprevalError(
                    f"image_folder: class folder {str(self.root / class_name)!r} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)})",
                    fix="add images or remove the folder (it would shift every later label)",
                )
            self.files += class_files
            self.labels += [label] * len(class_files)

    @staticmethod
    def _image_files(folder: Path) -> list[str]:
        return [
            os.path.join(parent, name)  # strings: 10,000 Path objects take a tenth of a second
            for parent, _, names in sorted(os.walk(folder, followlinks=True))
            for name in sorted(names)
            if is_image(name)
        ]

    def size(self, target: InputSpec) -> int:
        return len(self.files)

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        chosen = check_indices(indices, len(self.files))
        images = read_images(self.files, chosen, self.grayscale)
        return ImageSet(images, label_tensor(self.labels[i] for i in chosen), self.class_names)

    def describe(self) -> str:
        return f"image_folder {self.root} ({len(self.files):,} images, {len(self.class_names)} classes)"


class ImageFiles(DatasetSource):
    """Loose image files: ``paths`` is one path or glob pattern, or a list of them.

    Globs keep only image files (sorted; ``**`` recurses). Options: ``grayscale`` (default false);
    ``label_from_name`` (default false): the label is the last ``_``-separated integer of the file
    stem, as in foolbox's ``imagenet_07_609.jpg``.
    """

    name = "image_files"

    def __init__(self, paths, grayscale: bool = False, label_from_name: bool = False):
        patterns = [paths] if isinstance(paths, (str, os.PathLike)) else paths
        if not isinstance(patterns, (list, tuple)) or not patterns:
            raise PluginOptionError(
                f"'paths' must be a path, a glob pattern or a non-empty list of them, got {paths!r}"
            )
        self.grayscale = bool_option(grayscale, "grayscale")
        self.patterns = [str(path_option(pattern, "paths")) for pattern in patterns]
        self.files = list(dict.fromkeys(file for pattern in self.patterns for file in self._expand(pattern)))
        from_name = bool_option(label_from_name, "label_from_name")
        self.labels = [self._label(file) for file in self.files] if from_name else None

    @staticmethod
    def _expand(pattern: str) -> list[Path]:
        if any(char in pattern for char in "*?["):
            matches = sorted(Path(match) for match in glob.glob(pattern, recursive=True) if is_image(match))
            if not matches:
                raise ReprevalError(
                    f"image_files: no image file matches {pattern!r}", fix="check the pattern in 'paths'"
                )
            return matches
        file = Path(pattern)
        if not file.exists():
            raise ReprevalError(f"image_files: {pattern!r} does not exist", fix="check 'paths'")
        if file.is_dir():
            raise ReprevalError(
                f"image_files: {pattern!r} is a directory",
                fix=f"give a glob such as '{file / '*.jpg'}', or use the 'image_folder' dataset",
            )
        return [file]

    @staticmethod
    def _label(file: Path) -> int:
        last = file.stem.rsplit("_", 1)[-1]
        try:
            return int(last)
        except ValueError:
            raise ReprevalError(
                f"image_files: cannot read a label from {file.name!r}: {last!r} is not an integer",
                fix="name files <anything>_<label>.<ext>, or set 'label_from_name: false'",
            ) from None

    def size(self, target: InputSpec) -> int:
        return len(self.files)

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        chosen = check_indices(indices, len(self.files))
        labels = None if self.labels is None else label_tensor(self.labels[i] for i in chosen)
        return ImageSet(read_images(self.files, chosen, self.grayscale), labels)

    def describe(self) -> str:
        return f"image_files {', '.join(self.patterns)} ({len(self.files):,} images)"
