"""Inputs for networks: deterministic subsets, fitting images to a network's input, noise inputs."""

from __future__ import annotations

import torch
from torch import Tensor

from .api import DatasetSource, ImageSet, InputSpec, TextSet, uniform_noise
from .config import Drift, Subset
from .errors import ReprevalError

#: The most images a dataset may hold (its seeded permutation is allocated whole: 800 MB of indices).
MAX_DATASET_SIZE = 100_000_000
#: The most pixels an image may have while it is resized to a network's input (a 1×10,000 strip resized to a
#: shorter side of 256 would otherwise take gigabytes).
MAX_RESIZE_PIXELS = 2**26
SEEDS = range(-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


def subset_indices(subset: Subset, size: int, where: str = "dataset") -> list[int]:
    """The indices ``subset`` picks from a dataset of ``size`` images (seeded permutation, then the range).

    A dataset of more than :data:`MAX_DATASET_SIZE` images, or a seed torch cannot take, is a ReprevalError."""
    if size > MAX_DATASET_SIZE:
        raise ReprevalError(
            f"the dataset holds {size:,} images, more than the {MAX_DATASET_SIZE:,} a subset is drawn from",
            where=where,
            fix="use a smaller dataset (e.g. a smaller 'count')",
        )
    if subset.seed not in SEEDS:
        raise ReprevalError(f"seed {subset.seed} is out of range", where=where, fix="use a seed from 0 to 2**63 - 1")
    if subset.skip >= size:
        raise ReprevalError(
            f"skip={subset.skip} leaves no images of the {size} in the dataset", where=where, fix="lower 'skip'"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(subset.seed))
    stop = size if subset.limit is None else min(size, subset.skip + subset.limit)
    return order[subset.skip : stop].tolist()


def apply_drift(drift: Drift, images: Tensor) -> Tensor:
    """``clip(x + lambda·eps, 0, 1)`` with eps ~ N(0, I) from the drift's seed (see :class:`Drift`)."""
    if drift.strength == 0:
        return images
    if drift.seed not in SEEDS:
        raise ReprevalError(f"drift seed {drift.seed} is out of range", fix="use a seed from 0 to 2**63 - 1")
    generator = torch.Generator().manual_seed(drift.seed)
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return (images + drift.strength * eps).clamp(0.0, 1.0)


def load_images(
    source: DatasetSource,
    subset: Subset,
    target: InputSpec,
    where: str = "dataset",
    drift: Drift | None = None,
    landmarks: str | None = None,
) -> ImageSet:
    """The subset's images, fitted to ``target`` (not yet normalised), drifted if asked, with their landmarks
    moved along: the dataset's own (``landmarks: own``, or whatever it gives), those of a landmark file, or
    (``landmarks: ink``) derived from the fitted images (see :mod:`repreval.landmarks`)."""
    from .landmarks import INK_LANDMARKS, fit_landmarks, ink_landmarks, landmarks_for, read_landmark_file

    indices = subset_indices(subset, source.size(target), where)
    data = source.load(indices, target)
    if not isinstance(data, ImageSet):
        raise ReprevalError("the dataset gives texts, the model reads images", where=where, fix="use an image dataset")
    points, names = data.landmarks, data.landmark_names
    if landmarks == "own" and points is None:
        raise ReprevalError(
            "the dataset gives no landmarks of its own",
            where=f"{where}.landmarks",
            fix="give a landmark file (landmarks: PATH) or derive them (landmarks: ink)",
        )
    if landmarks not in (None, "ink", "own"):
        points, names = landmarks_for(
            read_landmark_file(landmarks, f"{where}.landmarks"), indices, getattr(source, "files", None), where
        )
    if points is not None:
        sizes = [tuple(image.shape[-2:]) for image in data.images]
        points = fit_landmarks(points, sizes, target)
    images = fit_to_input(data.images, target)
    if landmarks == "ink":
        points, names = ink_landmarks(images), INK_LANDMARKS
    return ImageSet(
        apply_drift(drift, images) if drift else images, data.labels, data.class_names, points, tuple(names)
    )


def load_texts(
    source: DatasetSource, subset: Subset, target: InputSpec, where: str = "dataset", drift: Drift | None = None
) -> TextSet:
    """The subset's texts, for a text encoder (its tokenizer turns them into token ids)."""
    if drift is not None:
        raise ReprevalError("drift is defined for images only", where=where, fix="remove 'drift' for a text model")
    data = source.load(subset_indices(subset, source.size(target), where), target)
    if not isinstance(data, TextSet):
        raise ReprevalError(
            "the dataset gives images, the model reads text", where=where, fix="use a text dataset (text_lines)"
        )
    return data


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
        import torchvision.transforms.v2.functional as TF  # only to resize: its import costs a second

        mode = TF.InterpolationMode(spec.interpolation)  # one of InputSpec.INTERPOLATIONS
        if spec.crop_pct:
            scaled = int(round(min(size) / spec.crop_pct))
            _check_resize(image.shape[-2:], scaled)
            image = TF.resize(image, [scaled], interpolation=mode, antialias=True)
            image = TF.center_crop(image, list(size))
        else:
            image = TF.resize(image, list(size), interpolation=mode, antialias=True)
    return image.clamp(0.0, 1.0)


def _check_resize(image_size: tuple[int, ...], shorter_side: int) -> None:
    """ReprevalError when resizing an image of ``image_size`` (H, W) to ``shorter_side`` would exceed
    :data:`MAX_RESIZE_PIXELS` (a long, thin image)."""
    height, width = image_size
    pixels = shorter_side * shorter_side * max(height, width) / max(min(height, width), 1)
    if pixels > MAX_RESIZE_PIXELS:
        raise ReprevalError(
            f"a {height}×{width} image resized to a shorter side of {shorter_side} would take {pixels:,.0f} pixels, "
            f"more than {MAX_RESIZE_PIXELS:,}",
            fix="crop such images first, or drop 'crop_pct' (a straight resize)",
        )


def normalize(images: Tensor, spec: InputSpec) -> Tensor:
    """Apply the network's mean/std normalisation to images in [0, 1]."""
    return spec.normalize(images)


def noise_inputs(count: int, spec: InputSpec, seed: int) -> Tensor:
    """``count`` noise images at the network's input shape (not yet normalised)."""
    return uniform_noise((count, *spec.shape), seed)
