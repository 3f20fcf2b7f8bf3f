""":func:`evaluate`: a model and its inputs as Python objects (a notebook's), no suite file, no import string.

The module and images are held in this process (:mod:`repreval.inprocess`) under keys derived from their
contents, a one-model suite names them, and :func:`repreval.runs.run` runs it: the results folder is the one
``repreval run`` writes, so ``repreval leaderboard`` and ``repreval publish`` read it, and evaluating the same
weights on the same images into the same folder again computes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import inprocess
from .api import InputSpec
from .config import Subset
from .data import subset_indices
from .errors import ReprevalError
from .plugins import load_plugins
from .runs import RunProgress, RunResult, one_model_suite, run

SALIENCY = ("gradients", "activations_x_gradients", "grad_cam")
SCORES = ("noise_score", "variance_score")


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | None = None,
    embedding: str | None = None,
    saliency: Sequence[str] = SALIENCY,
    scores: Sequence[str] = SCORES,
    variants: Sequence[str] = ("trained", "random"),
    build: Callable[[], nn.Module] | None = None,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    limit: int | None = None,
    probe_data: Any = None,
    seed: int = 0,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    device: str | None = None,
    evaluation: Mapping[str, Any] | None = None,
    progress: RunProgress | None = None,
    plugins_blocked: Sequence[str] = (),
) -> RunResult:
    """Score ``model``'s representation on ``data`` and return the leaderboards (see :class:`RunResult`).

    ``model``: an ``nn.Module`` whose forward output (flattened) is the embedding, or whose module named
    ``embedding`` gives it (pooled). Its weights are the ``trained`` variant; ``random`` is a fresh copy:
    ``build()`` (a function returning a new module) when given, else a copy whose modules re-draw their
    parameters with ``reset_parameters()`` (refused when some parameter has none to re-draw it).
    ``data``: images in [0, 1] as a tensor [N, C, H, W] (or [N, H, W]), a ``Dataset`` of images or (image,
    label) pairs, or a ``DataLoader`` of such batches; ``mean``/``std``: the model's input normalisation
    (default none). ``limit``: use the first ``limit`` inputs. ``probe_data``: labelled data for
    ``linear_probe``/``classifier_accuracy`` (split in two halves: fit, score; default ``data``).
    ``layers``: probe layers (default: one module per resolution stage); ``saliency``, ``scores``,
    ``variants``: plugin names as a suite lists them; ``evaluation``: further suite keys (``batch_size``,
    ``memory_budget``, ``strategy``, ``sample_components``, ...). ``out``: the results folder (default
    ``results/evaluate-<name>-<hash>``)."""
    if not isinstance(model, torch.nn.Module):
        raise ReprevalError(f"model must be an nn.Module, got {type(model).__name__}", fix="pass the module itself")
    images, labels = as_images(data, limit, "data")
    spec = _input_spec(images, mean, std)
    model_id = name or re.sub(r"[^a-z0-9_]+", "_", type(model).__name__.lower()).strip("_") or "model"
    held = inprocess.HeldModel(model, build, spec)
    if build is None and any(variant != "trained" for variant in variants):
        missing = inprocess.unresettable(model)
        if missing:
            raise ReprevalError(
                f"a random copy of {type(model).__name__} cannot be made: {missing[0]}"
                f"{f' and {len(missing) - 1} other parameters' if len(missing) > 1 else ''} has no "
                "reset_parameters() to re-draw it",
                fix="pass build=lambda: YourModel(...) to make fresh copies, or variants=['trained']",
            )
    model_key = f"{model_id}-{_digest(*model.state_dict().values())}"
    data_key = _digest(images, labels)
    keys = {data_key}
    inprocess.MODELS[model_key] = held
    inprocess.DATA[data_key] = _in_given_order(images, labels)
    probe = None
    if probe_data is not None or any(score in ("linear_probe", "classifier_accuracy") for score in scores):
        probe_images, probe_labels = (images, labels) if probe_data is None else as_images(probe_data, None, "probe")
        if probe_labels is None:
            raise ReprevalError(
                "linear_probe and classifier_accuracy need labelled data",
                fix="pass (image, label) pairs as data or probe_data",
            )
        probe_key = _digest(probe_images, probe_labels)
        keys.add(probe_key)
        inprocess.DATA[probe_key] = _in_given_order(probe_images, probe_labels)
        half = len(probe_images) // 2

        def probe(part: int) -> dict:
            return {"kind": "tensors", "options": {"key": probe_key}, "limit": half, "skip": half * part, "seed": 0}

    entry: dict[str, Any] = {"model": f"python:{model_key}", "weights": "hub"}
    if layers:
        entry["layers"] = list(layers)
    if embedding:
        entry["embedding"] = embedding
    suite = one_model_suite(
        f"evaluate-{model_id}",
        model_id,
        entry,
        {"kind": "tensors", "options": {"key": data_key}, "seed": 0},  # read in the order of _in_given_order
        saliency=list(saliency),
        scores=list(scores),
        variants=list(variants),
        seed=seed,
        probe=probe,
        evaluation=evaluation,
    )
    plugins = load_plugins(block=plugins_blocked, extra_plugins=[inprocess])
    try:
        return run(suite, out=out, device=device, plugins=plugins, progress=progress)
    finally:
        inprocess.MODELS.pop(model_key, None)
        for key in keys:
            inprocess.DATA.pop(key, None)


def as_images(data: Any, limit: int | None, what: str) -> tuple[Tensor, Tensor | None]:
    """Images [N, C, H, W] (float, in [0, 1]) and labels [N] or None, from a tensor, a Dataset or a DataLoader."""
    if isinstance(data, torch.Tensor):
        images, labels = data, None
    elif isinstance(data, DataLoader) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        batches = data if isinstance(data, DataLoader) else (data[i] for i in range(len(data)))
        parts, label_parts, count = [], [], 0
        for item in batches:
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            x = torch.as_tensor(x)
            x = x if isinstance(data, DataLoader) else x[None]
            parts.append(x)
            if y is not None:
                label_parts.append(torch.as_tensor(y).reshape(-1))
            count += len(x)
            if limit is not None and count >= limit:
                break
        if not parts:
            raise ReprevalError(f"{what} holds no inputs", fix="pass at least one image")
        images = torch.cat(parts)
        labels = torch.cat(label_parts) if len(label_parts) == len(parts) else None
    else:
        raise ReprevalError(
            f"{what} must be a tensor, a Dataset or a DataLoader, got {type(data).__name__}",
            fix="pass images as a tensor [N, C, H, W] in [0, 1]",
        )
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or not images.is_floating_point() or len(images) == 0:
        raise ReprevalError(
            f"{what} must be float images [N, C, H, W], got {images.dtype} of shape {list(images.shape)}",
            fix="pass images as a float tensor [N, C, H, W] in [0, 1]",
        )
    images = images[:limit].detach().cpu().float().contiguous()
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 1.0):  # noise inputs are drawn in [0, 1]: real inputs must live there too
        raise ReprevalError(
            f"{what} has values in [{low:.3g}, {high:.3g}], not in [0, 1]",
            fix="pass unnormalised images in [0, 1] and the model's normalisation as mean=..., std=...",
        )
    labels = None if labels is None else labels[: len(images)].long().cpu()
    return images, labels


def _in_given_order(images: Tensor, labels: Tensor | None) -> inprocess.HeldData:
    """The images held so that a run reads them in the order given (a dataset is read in the order of a seeded
    permutation): per-input values then follow the caller's inputs, and the probe splits are the two halves."""
    order = torch.tensor(subset_indices(Subset(seed=0), len(images)))
    arranged = torch.empty_like(images)
    arranged[order] = images
    if labels is not None:
        labels, given = torch.empty_like(labels), labels
        labels[order] = given
    return inprocess.HeldData(arranged, labels)


def _input_spec(images: Tensor, mean, std):
    channels, height, width = images.shape[1:]
    as_tuple = lambda value: tuple(float(v) for v in (value if isinstance(value, Sequence) else [value]))
    return InputSpec(channels, height, width, mean=as_tuple(mean), std=as_tuple(std))


def _digest(*tensors: Tensor | None) -> str:
    """12 hex digits of the tensors' contents (and shapes)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is not None:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]
