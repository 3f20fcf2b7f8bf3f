"""Diversity of part maps: whether a layer's filters (an explainer's interpretable filters, a performer's channels)
find different places on an image or collapse onto one. Per image, from its maps [N, K, h, w] (>= 0, after a
ReLU; a filter fires when its map's maximum is above 0):

* :func:`distinct_peaks`: how many different cells the firing filters peak on (K when all differ, 1 when all
  collapse onto one cell);
* :func:`filter_overlap`: the mean cosine similarity of the maps of two firing filters (0: no two overlap,
  1: all the same map up to scale).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .landmarks import peak_cells


def distinct_peaks(maps: Tensor) -> Tensor:
    """Per image [N] (int64): the number of distinct peak cells (:func:`repreval.landmarks.peak_cells`) among the
    filters of ``maps`` [N, K, h, w] that fire on it; 0 where none fires."""
    cells, fires = peak_cells(maps)
    flat = torch.where(fires, cells[..., 0] * maps.shape[-1] + cells[..., 1], -1).sort(dim=1).values
    first = torch.ones_like(fires)
    first[:, 1:] = flat[:, 1:] != flat[:, :-1]  # the first of a run of equal cells
    return (first & (flat >= 0)).sum(dim=1)


def filter_overlap(maps: Tensor) -> Tensor:
    """Per image [N]: the mean over pairs of filters of ``maps`` [N, K, h, w] that fire on it of the cosine
    similarity of their flattened maps (in [0, 1] for maps >= 0); NaN for an image with fewer than 2 firing
    filters. The pairs' sum comes from the sum of the unit maps: sum_{i<j} u_i·u_j = (|sum u|² - sum |u|²) / 2."""
    if maps.dim() != 4:
        raise ValueError(f"maps must be [N, K, h, w], not of shape {tuple(maps.shape)}")
    flat = maps.flatten(2).float()
    fires = flat.amax(dim=2) > 0
    norms = torch.linalg.vector_norm(flat, dim=2, keepdim=True)
    units = torch.where(fires[..., None], flat / norms.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    total = units.sum(dim=1, dtype=torch.float64)  # [N, hw]
    squares = (units * units).sum(dim=2, dtype=torch.float64).sum(dim=1)  # sum |u|², 1 per firing filter
    firing = fires.sum(dim=1).double()
    pairs_sum = ((total * total).sum(dim=1) - squares) / 2
    overlap = pairs_sum / (firing * (firing - 1) / 2).clamp_min(1)
    return torch.where(firing >= 2, overlap, math.nan).float()
