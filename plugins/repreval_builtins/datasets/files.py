"""Image files read with PIL: ``image_folder`` (one sub-folder per class) and ``image_files``."""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repreval.api import (
    DatasetSource,
    ImageSet,
    InputSpec,
    PluginOptionError,
    ReprevalError,
    file_kind,
    open_regular,
    shown,
)

from .common import (
    IMAGE_EXTENSIONS,
    PROBLEMS,
    batch,
    bool_option,
    check_indices,
    existing_directory,
    label_tensor,
    path_option,
)

if TYPE_CHECKING:  # PIL, numpy and torch are imported where images are read: registering stays cheap
    from torch import Tensor

#: The most pixels (width × height, from the file's header) an image may have; larger ones are refused
#: before they are decoded.
MAX_IMAGE_PIXELS = 64_000_000
#: The most folders one ``image_files`` pattern may search (``/**/*.png`` would search the whole disk).
MAX_GLOB_FOLDERS = 10_000
MAGIC = re.compile(r"[*?[]")


def read_image(path: str | Path, grayscale: bool = False) -> Tensor:
    """One image file as a float [C, H, W] tensor in [0, 1]: RGB (C = 3), or L (C = 1) if ``grayscale``.

    A file that is not a regular image file, or whose header claims more than :data:`MAX_IMAGE_PIXELS`, is a
    one-line ReprevalError (PIL's warnings about odd files are silenced: the error is the message)."""
    import numpy as np
    import torch
    from PIL import Image

    with open_regular(path, "image") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(handle) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ReprevalError(
                        f"image {shown(path)} claims {width}×{height} pixels, more than {MAX_IMAGE_PIXELS:,}",
                        fix="shrink or remove the file",
                    )
                pixels = np.array(image.convert("L" if grayscale else "RGB"))
        except ReprevalError:
            raise
        except Image.DecompressionBombError:
            raise ReprevalError(
                f"image {shown(path)} claims more than {MAX_IMAGE_PIXELS:,} pixels", fix="shrink or remove the file"
            ) from None
        except Image.UnidentifiedImageError:
            raise ReprevalError(
                f"{shown(path)} is not an image file PIL can read", fix="replace or remove the file"
            ) from None
        except Exception as exc:  # PIL's decoders raise many kinds on damaged files
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise ReprevalError(
                f"cannot read image {shown(path)}: {reason}", fix="replace or remove the file"
            ) from None
    tensor = torch.from_numpy(pixels)
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return tensor.float().div(255)


def is_image(name: str) -> bool:
    """Whether file name ``name`` ends in an image extension (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def image_files_below(folder: Path) -> list[str]:
    """The image files below ``folder``, grouped by folder (folders and names sorted, as ``sorted(os.walk())``).

    Symlinked folders are followed but every real folder is read once (a link loop ends); FIFOs, devices and
    sockets are skipped whatever their names; unreadable folders are skipped."""
    found: list[tuple[str, list[str]]] = []
    seen: set[tuple[int, int]] = set()
    pending = [str(folder)]
    while pending:
        parent = pending.pop()
        try:
            status = os.stat(parent)
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            with os.scandir(parent) as scanned:
                entries = list(scanned)
        except OSError:
            continue
        pending += [entry.path for entry in entries if entry.is_dir()]
        found.append((parent, sorted(entry.name for entry in entries if is_image(entry.name) and entry.is_file())))
    return [os.path.join(parent, name) for parent, names in sorted(found) for name in names]


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
        try:
            with os.scandir(self.root) as entries:
                class_folders = sorted(entry.name for entry in entries if entry.is_dir() and entry.name[0] != ".")
        except OSError as exc:
            raise ReprevalError(
                f"image_folder: cannot list {shown(self.root)} ({exc.strerror})", fix="check the folder's permissions"
            ) from None
        if not class_folders:
            raise ReprevalError(
                f"image_folder: {str(self.root)!r} has no class sub-folders",
                fix="use the layout PATH/<class>/<image>, or the 'image_files' dataset for loose images",
            )
        self.class_names = tuple(class_folders)
        self.files: list[str] = []
        self.labels: list[int] = []
        for label, class_name in enumerate(self.class_names):
            class_files = image_files_below(self.root / class_name)  # strings: 10,000 Paths take 0.1 s
            if not class_files:
                raise ReprevalError(
                    f"image_folder: class folder {str(self.root / class_name)!r} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)})",
                    fix="add images or remove the folder (it would shift every later label)",
                )
            self.files += class_files
            self.labels += [label] * len(class_files)

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
        if MAGIC.search(pattern):
            matches = sorted(Path(match) for match in Glob(pattern).matches() if is_image(match))
            if not matches:
                raise ReprevalError(f"image_files: no image file matches {shown(pattern)}", fix="check 'paths'")
            return matches
        file = Path(pattern)
        kind = file_kind(file, "path", "image_files")
        if kind == "directory":
            raise ReprevalError(
                f"image_files: {shown(pattern)} is a directory",
                fix=f"give a glob such as '{file / '*.jpg'}', or use the 'image_folder' dataset",
            )
        if kind != "file":
            raise ReprevalError(f"image_files: {shown(pattern)} {PROBLEMS[kind]}", fix="check 'paths'")
        return [file]

    @staticmethod
    def _label(file: Path) -> int:
        last = file.stem.rsplit("_", 1)[-1]
        if not (last.isascii() and last.isdecimal() and len(last) <= 9):  # not '²', '٣' or 5,000 digits
            raise ReprevalError(
                f"image_files: cannot read a label from {shown(file.name)}: {shown(last)} is not an integer below 10⁹",
                fix="name files <anything>_<label>.<ext>, or set 'label_from_name: false'",
            )
        return int(last)

    def size(self, target: InputSpec) -> int:
        return len(self.files)

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        chosen = check_indices(indices, len(self.files))
        labels = None if self.labels is None else label_tensor(self.labels[i] for i in chosen)
        return ImageSet(read_images(self.files, chosen, self.grayscale), labels)

    def describe(self) -> str:
        return f"image_files {', '.join(self.patterns)} ({len(self.files):,} images)"


class Glob:
    """The paths matching a glob ``pattern`` as ``glob.glob(pattern, recursive=True)`` finds them, but bounded:
    each real folder is searched once per ``**`` (a symlink loop ends), and a pattern that searches more than
    :data:`MAX_GLOB_FOLDERS` folders is refused; only regular files are kept."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.parts = Path(pattern).parts
        if self.parts and self.parts[-1] == "**":  # 'DIR/**' matches every file below DIR, as 'DIR/**/*' does
            self.parts = (*self.parts, "*")
        self.searched = 0

    def matches(self) -> list[str]:
        return [path for path in self._matches("", self.parts) if os.path.isfile(path)]

    def _entries(self, folder: str) -> list[os.DirEntry]:
        self.searched += 1
        if self.searched > MAX_GLOB_FOLDERS:
            raise ReprevalError(
                f"image_files: {shown(self.pattern)} searches more than {MAX_GLOB_FOLDERS:,} folders",
                fix="start the pattern at the images' folder, or use the 'image_folder' dataset",
            )
        try:
            with os.scandir(folder or ".") as entries:
                return list(entries)
        except OSError:
            return []

    def _matches(self, folder: str, parts: tuple[str, ...]) -> list[str]:
        """The paths below ``folder`` that match the pattern's components ``parts``."""
        head, rest = parts[0], parts[1:]
        if head == "**":
            return self._below(folder, rest)
        if not MAGIC.search(head):
            path = os.path.join(folder, head)
            if not rest:
                return [path] if os.path.lexists(path) else []
            return self._matches(path, rest) if os.path.isdir(path) else []
        found = []
        for entry in self._entries(folder):
            hidden = entry.name.startswith(".") and not head.startswith(".")
            if hidden or not fnmatch.fnmatchcase(entry.name, head):
                continue
            path = os.path.join(folder, entry.name)
            if not rest:
                found.append(path)
            elif entry.is_dir():
                found += self._matches(path, rest)
        return found

    def _below(self, folder: str, rest: tuple[str, ...]) -> list[str]:
        """``**`` then ``rest``: the matches in ``folder`` and every non-hidden folder below it, each once."""
        found, seen, pending = [], set(), [folder]
        while pending:
            current = pending.pop()
            try:
                status = os.stat(current or ".")
            except OSError:
                continue
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            found += self._matches(current, rest)
            pending += [
                os.path.join(current, entry.name)
                for entry in self._entries(current)
                if not entry.name.startswith(".") and entry.is_dir()
            ]
        return found
