"""Inputs for networks: deterministic subsets, fitting images to a network's input, noise inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from .api import DatasetSource, ImageSet, InputSpec
from .errors import ReprevalError


@dataclass(frozen=True)
class Subset:
    """Which images of a dataset to use: a seeded permutation, then ``[skip : skip + limit]``.

    Two subsets with the same seed and non-overlapping ranges are disjoint (train / held-out splits).
    """

    limit: int | None = None
    skip: int = 0
    seed: int = 0

    def indices(self, size: int, where: str = "dataset") -> list[int]:
        if self.skip >= size:
            raise ReprevalError(
                f"skip={self.skip} leaves no images of the {size} in the dataset",
                where=where,
                fix="lower 'skip'",
            )
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed))
        stop = size if self.limit is None else min(size, self.skip + self.limit)
        return order[self.skip : stop].tolist()


@dataclass(frozen=True)
class Drift:
    """Dataset drift of the paper's section 4.4: ``x_lambda = clip(x + lambda·eps, 0, 1)``, eps ~ N(0, I)
    drawn from ``seed`` at the network's input shape (the same eps for every lambda of one seed)."""

    strength: float = 0.0  # lambda
    seed: int = 0

    def apply(self, images: Tensor) -> Tensor:
        if self.strength == 0:
            return images
        generator = torch.Generator().manual_seed(self.seed)
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        return (images + self.strength * eps).clamp(0.0, 1.0)


@dataclass
class DatasetConfig:
    """A dataset as a suite declares it: a registered dataset kind, its options, a subset, optional drift."""

    kind: str
    options: dict = field(default_factory=dict)
    subset: Subset = Subset()
    drift: Drift | None = None


def load_images(source: DatasetSource, subset: Subset, target: InputSpec, where: str = "dataset", drift: Drift | None = None) -> ImageSet:
    """The subset's images, fitted to ``target`` (not yet normalised), drifted if asked."""
    data = source.load(subset.indices(source.size(target), where), target)
    images = fit_to_input(data.images, target)
    return ImageSet(drift.apply(images) if drift else images, data.labels, data.class_names)


def fit_to_input(images: Tensor | list[Tensor], spec: InputSpec) -> Tensor:
    """Images in [0, 1] -> [N, C, H, W] at the network's size and channel count, still in [0, 1].

    Resizing follows timm's evaluation transform: with ``crop_pct``, resize the shorter side to
    ``size / crop_pct`` and centre-crop; without, resize straight to the input size.
    """
    if isinstance(images, Tensor) and images.dim() == 4:
        if tuple(images.shape[1:]) == spec.shape:
            return images.float()
        images = list(images)
    return torch.stack([_fit_one(image, spec) for image in images]) if images else torch.empty(0, *spec.shape)


def _fit_one(image: Tensor, spec: InputSpec) -> Tensor:
    image = image.float()
    if image.dim() == 2:
        image = image[None]
    if image.shape[0] != spec.channels:
        if image.shape[0] == 1:
            image = image.expand(spec.channels, -1, -1)
        elif spec.channels == 1:
            image = image[:3].mean(dim=0, keepdim=True)
        else:
            raise ReprevalError(f"cannot turn a {image.shape[0]}-channel image into {spec.channels} channels")
    size = (spec.height, spec.width)
    if tuple(image.shape[-2:]) != size:
        mode = _INTERPOLATION.get(spec.interpolation, TF.InterpolationMode.BILINEAR)
        if spec.crop_pct:
            scaled = int(round(min(size) / spec.crop_pct))
            image = TF.resize(image, [scaled], interpolation=mode, antialias=True)
            image = TF.center_crop(image, list(size))
        else:
            image = TF.resize(image, list(size), interpolation=mode, antialias=True)
    return image.clamp(0.0, 1.0)


_INTERPOLATION = {
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "nearest": TF.InterpolationMode.NEAREST,
}


def normalize(images: Tensor, spec: InputSpec) -> Tensor:
    """Apply the network's mean/std normalisation to images in [0, 1]."""
    mean = torch.tensor(spec.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
    return (images - mean) / std


def uniform_noise(count: int, spec: InputSpec, seed: int) -> Tensor:
    """``count`` images of i.i.d. U[0, 1) pixels at the network's input shape (not yet normalised)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((count, *spec.shape), generator=generator)
