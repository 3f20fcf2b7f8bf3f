"""Datasets that need no files: scikit-learn's ``digits`` and seeded uniform ``noise``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from repreval.api import DatasetSource, ImageSet, InputSpec

from .common import MAX_COUNT, check_indices, int_option

if TYPE_CHECKING:  # torch is imported where images are made: registering the datasets stays cheap
    from torch import Tensor


class Digits(DatasetSource):
    """scikit-learn's ``load_digits``: 1,797 real 8×8 handwritten digits, 1 channel, labels 0-9."""

    name = "digits"

    @cached_property
    def _data(self) -> tuple[Tensor, Tensor, tuple[str, ...]]:
        import torch
        from sklearn.datasets import load_digits  # on first use: scikit-learn is slow to import

        digits = load_digits()
        images = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)  # pixel values are 0..16
        return images, torch.from_numpy(digits.target).long(), tuple(str(name) for name in digits.target_names)

    def size(self, target: InputSpec) -> int:
        return len(self._data[0])

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        import torch

        images, labels, class_names = self._data
        chosen = torch.tensor(check_indices(indices, len(images)), dtype=torch.long)
        return ImageSet(images[chosen], labels[chosen], class_names)

    def describe(self) -> str:
        return "digits: scikit-learn's 1,797 8×8 handwritten digits, 10 classes"


class Noise(DatasetSource):
    """``count`` images (at most :data:`MAX_COUNT`) of i.i.d. U[0, 1) pixels at the network's input shape; no
    labels.

    Image ``i`` depends only on ``seed`` and ``i`` (its own generator), whichever images are loaded.
    """

    name = "noise"

    def __init__(self, count: int = 64, seed: int = 0):
        self.count = int_option(count, "count", minimum=1, maximum=MAX_COUNT)
        self.seed = int_option(seed, "seed", minimum=0)

    def image(self, index: int, shape: tuple[int, ...]) -> Tensor:
        """Image ``index``: U[0, 1) pixels of ``shape`` from a generator seeded by ``seed`` and ``index``."""
        import torch

        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**64)
        return torch.rand(shape, generator=generator)

    def size(self, target: InputSpec) -> int:
        return self.count

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet:
        import torch

        chosen = check_indices(indices, self.count)
        images = [self.image(i, target.shape) for i in chosen]
        return ImageSet(torch.stack(images) if images else torch.empty(0, *target.shape))

    def describe(self) -> str:
        return f"noise: {self.count} uniform-noise images (seed {self.seed})"
