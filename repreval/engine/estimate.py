"""Sampled components for very large D (opt-in ``evaluation.sample_components``): ``sample_components``
draws k of the D component indices (seeded); the engine then computes those components only (``components``
of :func:`~repreval.engine.maps.compute_maps`: k backward rows instead of D). Scores turn the k maps into
estimates with standard errors (``AttributionScore.estimate``; the built-in scores' estimators are in their plugin).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_components(dim: int, k: int, seed: int = 0) -> Tensor:
    """``k`` distinct indices of ``dim`` components, uniformly at random from a seeded generator, sorted."""
    if not 1 <= k <= dim:
        raise ValueError(f"sample between 1 and {dim} components, not {k}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(dim, generator=generator)[:k].sort().values
