"""The attribution engine: :func:`compute_maps` (per-component maps of many requests from one tap pass) and
:func:`compute_mean_maps` (their one-backward mean)."""

from .maps import MapRequest, auto_strategy, compute_maps, compute_mean_maps

__all__ = ["MapRequest", "auto_strategy", "compute_maps", "compute_mean_maps"]
