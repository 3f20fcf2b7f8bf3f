"""Built-in aggregators over channels or embedding components.

``mean``, ``abs`` and ``var`` (biased, ddof = 0) are the paper's; ``skew`` (lopsidedness), ``max`` and
``topk_mean`` go beyond it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import Aggregator, PluginOptionError, hookimpl

if TYPE_CHECKING:  # annotations only: no torch import when `repreval list` loads the plugins
    from torch import Tensor


def _abs(values: Tensor) -> Tensor:
    """``torch.abs``, without importing torch here."""
    return values.abs()


class Mean(Aggregator):
    """Signed mean (the reference code's "lin"): signal of opposite signs cancels."""

    name = "mean"
    linear = True
    elementwise = staticmethod(lambda values: values)

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        return values.mean(dim=dim)


class AbsMean(Aggregator):
    """Mean absolute value: dense maps."""

    name = "abs"
    elementwise = staticmethod(_abs)

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        return values.abs().mean(dim=dim)


class Variance(Aggregator):
    """Biased variance (ddof = 0): high where values spread, whatever their magnitude."""

    name = "var"

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        return values.var(dim=dim, correction=0)


class Skewness(Aggregator):
    """Standardised third moment (lopsidedness); 0 where the values do not vary."""

    name = "skew"

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        centred = values - values.mean(dim=dim, keepdim=True)
        second = centred.pow(2).mean(dim=dim)
        third = centred.pow(3).mean(dim=dim)
        return third / second.clamp_min(1e-30).pow(1.5) * (second > 0)


class Max(Aggregator):
    """Largest value."""

    name = "max"

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        return values.amax(dim=dim)


class TopKMean(Aggregator):
    """Mean of the k largest values (k clipped to the dimension's size)."""

    name = "topk_mean"

    def __init__(self, k: int = 5):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PluginOptionError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        k = min(self.k, values.shape[dim])
        return values.topk(k, dim=dim).values.mean(dim=dim)


@hookimpl
def register_aggregators(register):
    """Register ``mean``, ``abs``, ``var``, ``skew``, ``max`` and ``topk_mean``."""
    for aggregator in (Mean, AbsMean, Variance, Skewness, Max, TopKMean):
        register(aggregator)
