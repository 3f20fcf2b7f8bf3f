"""The built-in explainer ``parts``: Zhang, Yang, Wu's explainer network (Part 2 of the method).

Options (defaults; the paper gives beta and tau, the others are repreval's):

* ``filters`` (32): interpretable filters, and channels of the ordinary track;
* ``hidden`` (64): channels of the hidden conv layers;
* ``beta`` (4) and ``tau`` (None: 0.5 / n², n² the positions of the map): the part templates;
* ``eta`` (1.0): weight of -log p, which pushes information through the interpretable track;
* ``reconstruction_weight`` (1.0) and ``filter_weight`` (1.0): weights of the relative reconstruction error and
  of the filter loss (averaged over the filters);
* ``filter_gradient`` ("exact"): what trains the interpretable filters: ``exact``, the gradient of the
  mutual-information filter loss itself, or ``surrogate``, the normalised surrogate the original
  Interpretable-CNN code back-propagates instead (:func:`.templates.surrogate_filter_loss`);
* ``overlap_weight`` (0): weight of repreval's own term against filters collapsing onto one place (the mean
  cosine similarity of two filters' masked maps; neither paper has such a term);
* ``epochs`` (10), ``batch_size`` (64), ``lr`` (1e-3): Adam.

Version 2: norm layers on both tracks before they are mixed (version 1 mixed them unnormalised).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from repreval.api import Explainer, PluginOptionError, TrainingContext, hookimpl

if TYPE_CHECKING:
    from torch import Tensor, nn

#: What trains the interpretable filters (option ``filter_gradient``)
FILTER_GRADIENTS = ("exact", "surrogate")


class PartExplainers(Explainer):
    """Zhang, Yang, Wu's explainer: interpretable (part-template) and ordinary tracks, gate p, decoder."""

    name = "parts"
    version = "2"
    tracks = ("interpretable", "ordinary")

    def __init__(
        self,
        filters: int = 32,
        hidden: int = 64,
        beta: float = 4.0,
        tau: float | None = None,
        eta: float = 1.0,
        reconstruction_weight: float = 1.0,
        filter_weight: float = 1.0,
        filter_gradient: str = "exact",
        overlap_weight: float = 0.0,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
    ):
        for key, value in (("filters", filters), ("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PluginOptionError(f"{key} must be a positive integer, got {value!r}")
        numbers: dict[str, float] = {"beta": beta, "eta": eta, "reconstruction_weight": reconstruction_weight}
        numbers |= {"filter_weight": filter_weight, "overlap_weight": overlap_weight, "lr": lr}
        numbers |= {"tau": tau} if tau is not None else {}
        for key, number in numbers.items():
            if (
                isinstance(number, bool)
                or not isinstance(number, (int, float))
                or not math.isfinite(number)
                or number < 0
            ):
                raise PluginOptionError(f"{key} must be a number >= 0, got {number!r}")
        if lr == 0 or beta == 0:
            raise PluginOptionError("lr and beta must be positive")
        if filter_gradient not in FILTER_GRADIENTS:
            raise PluginOptionError(
                f"filter_gradient must be one of {', '.join(FILTER_GRADIENTS)}, got {filter_gradient!r}"
            )
        self.filters, self.hidden, self.beta, self.tau = filters, hidden, float(beta), tau
        self.filter_gradient = filter_gradient
        self.settings = {
            "overlap_weight": float(overlap_weight),
            "eta": float(eta),
            "reconstruction_weight": float(reconstruction_weight),
            "filter_weight": float(filter_weight),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": float(lr),
        }

    def build(self, source: tuple[int, int, int], targets: dict[str, tuple[int, int, int]], seed: int) -> nn.Module:
        from .network import PartExplainer

        return PartExplainer(  # the host seeds
            source, targets, self.filters, self.hidden, self.beta, self.tau, self.filter_gradient
        )

    def fit(
        self, module: nn.Module, features: Tensor, targets: dict[str, Tensor], seed: int, context: TrainingContext
    ) -> dict:
        from .network import PartExplainer
        from .training import train_explainer

        assert isinstance(module, PartExplainer)  # built by build()
        return train_explainer(module, features, targets, self.settings, seed, context)


@hookimpl
def register_explainers(register):
    """Register the ``parts`` explainer."""
    register(PartExplainers)
