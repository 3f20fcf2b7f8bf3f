"""IDX files (the MNIST format) and the ``mnist`` dataset."""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from repreval.api import DatasetSource, ImageSet, InputSpec, ReprevalError, file_kind, open_regular, shown

from .common import PROBLEMS, check_indices, existing_directory, path_option

if TYPE_CHECKING:  # numpy and torch are imported where files are read: registering the datasets stays cheap
    import numpy as np

#: IDX type byte -> big-endian numpy dtype (as a string for ``np.dtype``).
IDX_DTYPES = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
GZIP_MAGIC = b"\x1f\x8b"
#: The most dimensions and data bytes (decompressed) an IDX file may announce; larger headers are refused
#: before anything is allocated or decompressed.
MAX_IDX_DIMENSIONS = 8
MAX_IDX_BYTES = 2**30


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (plain or gzip, told apart by content) as a native-endian numpy array.

    Raises ReprevalError naming the file when it cannot be read, is not IDX, announces more than
    :data:`MAX_IDX_DIMENSIONS` dimensions or :data:`MAX_IDX_BYTES` bytes, or its size does not match its header.
    A gzip file is decompressed only as far as the header announces (a bomb is not inflated).
    """
    import numpy as np

    path = Path(path)
    with open_regular(path, "IDX file") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        stream: gzip.GzipFile | BinaryIO = gzip.GzipFile(fileobj=handle) if compressed else handle
        try:
            dtype, shape, data = _read_idx_stream(stream, path)
        except (OSError, EOFError, zlib.error) as exc:
            reason = type(exc).__name__ if isinstance(exc, (EOFError, zlib.error)) else exc.strerror or "damaged gzip"
            raise ReprevalError(
                f"cannot read IDX file {shown(path)} ({reason})", fix="download the file again"
            ) from None
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_idx_stream(stream: gzip.GzipFile | BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...], bytes]:
    """The dtype, shape and data bytes of the IDX file ``stream``, checked against its header (in Python ints:
    no product wraps) before the data is read; the data is read up to one byte past the announced size."""
    import numpy as np

    def corrupt(problem: str) -> ReprevalError:
        return ReprevalError(f"{shown(path)} is not a valid IDX file: {problem}", fix="download the file again")

    magic = stream.read(4)  # the bytes are never quoted: the file may be anything
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in IDX_DTYPES:
        raise corrupt("bad magic number" if magic else "bad magic number (empty file)")
    dtype, ndim = np.dtype(IDX_DTYPES[magic[2]]), magic[3]
    if not 1 <= ndim <= MAX_IDX_DIMENSIONS:
        raise corrupt(f"the header announces {ndim} dimensions (1 to {MAX_IDX_DIMENSIONS} are read)")
    dimensions = stream.read(4 * ndim)
    if len(dimensions) < 4 * ndim:
        raise corrupt(f"the header announces {ndim} dimensions but the file ends after {4 + len(dimensions)} bytes")
    shape = struct.unpack(f">{ndim}I", dimensions)
    header_size, size = 4 + 4 * ndim, math.prod(shape) * dtype.itemsize
    if size > MAX_IDX_BYTES:
        raise corrupt(f"shape {shape} of {dtype.name} announces {size:,} bytes, more than the {MAX_IDX_BYTES:,} read")
    data = stream.read(size + 1)
    if len(data) != size:
        found = f"{header_size + len(data)}" if len(data) < size else "more"
        raise corrupt(f"shape {shape} of {dtype.name} needs {header_size + size} bytes, the file has {found}")
    return dtype, shape, data


IMAGES_PATTERN = re.compile(r"images[-.]idx3-ubyte(\.gz)?$")
LABELS_PATTERN = re.compile(r"labels[-.]idx1-ubyte(\.gz)?$")


class Mnist(DatasetSource):
    """MNIST-format IDX files (MNIST, Fashion-MNIST, ...): 1-channel uint8 images, labels if found.

    Options: ``path`` (a directory with one ``*images-idx3-ubyte[.gz]`` and, optionally, one
    ``*labels-idx1-ubyte[.gz]``), or explicit ``images`` / ``labels`` files (relative to ``path``
    when it is given).
    """

    name = "mnist"

    def __init__(self, path=None, images=None, labels=None):
        directory = None if path is None else existing_directory(path_option(path, "path"), "path", self.name)
        if directory is None and images is None:
            raise ReprevalError(
                "mnist needs the directory of its IDX files",
                fix="set 'path: DIR' (e.g. the folder with t10k-images-idx3-ubyte.gz), or 'images: FILE'",
            )
        self.images_file = self._file(directory, images, "images", IMAGES_PATTERN)
        if self.images_file is None:
            raise ReprevalError(
                f"mnist: no *images-idx3-ubyte[.gz] file in {str(directory)!r}",
                fix="name the images file with 'images: FILE'",
            )
        self.labels_file = self._file(directory, labels, "labels", LABELS_PATTERN)

    @staticmethod
    def _file(directory: Path | None, given, option: str, pattern: re.Pattern) -> Path | None:
        """The file named by option ``given``, else the one in ``directory`` matching ``pattern``, else None."""
        if given is not None:
            file = path_option(given, option)
            file = directory / file if directory is not None else file
            kind = file_kind(file, f"{option} file", "mnist")
            if kind != "file":
                raise ReprevalError(f"mnist: {option} file {shown(file)} {PROBLEMS[kind]}", fix=f"check '{option}'")
            return file
        if directory is None:
            return None
        found = sorted(f for f in directory.iterdir() if pattern.search(f.name) and f.is_file())
        # A plain file and its .gz (torchvision's raw folder keeps both) are one file: take the plain one.
        names = {f.name for f in found}
        found = [f for f in found if not (f.suffix == ".gz" and f.name[:-3] in names)]
        if len(found) > 1:
            raise ReprevalError(
                f"mnist: {str(directory)!r} holds several {option} files: {', '.join(f.name for f in found)}",
                fix=f"name one with '{option}: FILE'",
            )
        return found[0] if found else None

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        images = read_idx(self.images_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ReprevalError(
                f"{str(self.images_file)!r} holds {images.dtype} data of shape {images.shape}, not N×H×W uint8 images",
                fix="name the images file with 'images: FILE'",
            )
        if self.labels_file is None:
            return images, None
        labels = read_idx(self.labels_file)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
            raise ReprevalError(
                f"{str(self.labels_file)!r} holds {labels.dtype} data of shape {labels.shape}, "
                f"not {len(images)} integer labels for {str(self.images_file)!r}",
                fix="name the matching labels file with 'labels: FILE'",
            )
        return images, labels

    def size(self, target: InputSpec) -> int:
        return len(self._arrays[0])

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        import numpy as np
        import torch

        images, labels = self._arrays
        chosen = check_indices(indices, len(images))
        pixels = torch.from_numpy(images[chosen]).unsqueeze(1).float().div(255)
        return ImageSet(pixels, None if labels is None else torch.from_numpy(labels[chosen].astype(np.int64)))

    def describe(self) -> str:
        labels = self.labels_file.name if self.labels_file else "no labels"
        return f"mnist: IDX images {self.images_file} ({labels})"
