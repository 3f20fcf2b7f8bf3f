"""Estimates of the built-in scores from the maps of k of the D components, sampled without replacement
(``evaluation.sample_components``), with standard errors:

* variance score: VS = mean over pixels of the biased variance over all D components of the normalised
  maps. From k sampled components, ``(D - 1)/D · s²`` (s² the sample variance, k - 1 denominator) is
  unbiased for each pixel's biased population variance (simple random sampling without replacement),
  so the estimate is unbiased. Sparsity-aware, it is divided by f(1 - f) for the sampled maps' mean f
  (a ratio estimate: consistent, not unbiased).
* noise score with a component aggregator that is a mean of an element-wise function
  (``Aggregator.elementwise``: ``mean``, ``abs``): the aggregated map over the k components is an unbiased
  estimate of the one over D; the score (normalisation, |difference|) is then consistent but biased upwards
  by O(1/k - 1/D): a fraction of the SE where the score is clearly above 0, about one SE where it is near 0.

Standard errors come from a seeded bootstrap over the k sampled components (``resamples`` draws of k
with replacement; real and noise maps resampled together) or, with ``method="jackknife"``, from the k
leave-one-out estimates. Either is multiplied by the finite-population correction sqrt(1 - k/D); the
bootstrap's is also rescaled by sqrt(k/(k - 1)) (its plug-in variance divides by k). For a mean both give
the textbook SE sqrt((1 - k/D) s²/k); at k = D the SE is 0 and the estimate is exact. A resample is a
weighting of the k maps (multiplicity / size), so all resamples are a few batched matrix products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from repreval.api import Aggregator, normalize_maps

SE_METHODS = ("bootstrap", "jackknife")


class Estimate(NamedTuple):
    """Per-input estimate [N] and its standard error [N]; unpacks as ``value, se = ...``."""

    value: Tensor
    standard_error: Tensor


def normalized_components(maps: Tensor, binarize: bool) -> Tensor:
    """Each component map normalised to [0, 1] and, with ``binarize``, thresholded at 0.5 (variance score)."""
    normalized = normalize_maps(maps)
    return (normalized >= 0.5).to(normalized.dtype) if binarize else normalized


def relative_to_ceiling(score: Tensor, mean: Tensor) -> Tensor:
    """A variance score as a fraction of the most that maps with mean ``mean`` can score, ``mean(1 - mean)``
    (0 where that ceiling is 0: maps all 0 or all 1)."""
    ceiling = mean * (1 - mean)
    return torch.where(ceiling > 0, score / ceiling.clamp_min(torch.finfo(score.dtype).tiny), torch.zeros_like(score))


def estimate_variance_score(
    maps: Tensor,
    dim: int,
    *,
    binarize: bool = False,
    sparsity_aware: bool = False,
    method: str = "bootstrap",
    resamples: int = 200,
    seed: int = 0,
) -> Estimate:
    """The variance score of all ``dim`` components from the maps [N, k, h, w] of k of them (sampled
    without replacement, not normalised): unbiased estimate (sparsity-aware: consistent), standard error by
    ``method``."""
    normalized = normalized_components(maps.double(), binarize)
    values = normalized.flatten(2)  # [N, k, P]
    squares = values.square()

    def statistic(weights: Tensor, size: int) -> Tensor:  # weights [R, k] -> [N, R]
        weights = weights.to(values)
        mean = torch.einsum("rk,nkp->nrp", weights, values)
        biased = torch.einsum("rk,nkp->nrp", weights, squares) - mean.square()
        score = ((dim - 1) / dim * size / (size - 1) * biased.clamp_min(0)).mean(dim=2)
        return relative_to_ceiling(score, mean.mean(dim=2)) if sparsity_aware else score

    value, se = _estimate(statistic, normalized.shape[1], dim, method, resamples, seed)
    return Estimate(value.to(maps.dtype), se.to(maps.dtype))


def estimate_noise_score(
    real: Tensor,
    noise: Tensor,
    dim: int,
    aggregator: Aggregator,
    *,
    method: str = "bootstrap",
    resamples: int = 200,
    seed: int = 0,
) -> Estimate:
    """The noise score mean |N(A(real)) - N(A(noise))| of all ``dim`` components from the maps
    [N, k, h, w] of the same k sampled components for real and noise inputs; A (``aggregator``) must be
    a mean over components (``elementwise`` set). For the reference, pass the second noise set as ``real``."""
    elementwise = getattr(aggregator, "elementwise", None)
    if elementwise is None:
        raise ValueError(
            f"component aggregator {getattr(aggregator, 'name', aggregator)!r} is not a mean over components; "
            "estimates support means of an element-wise function, such as mean and abs"
        )
    if real.shape != noise.shape:
        raise ValueError(f"real and noise maps differ in shape: {tuple(real.shape)} and {tuple(noise.shape)}")
    shape = real.shape[-2:]
    per_component = [elementwise(maps.float()).flatten(2) for maps in (real, noise)]  # [N, k, P]

    def statistic(weights: Tensor, size: int) -> Tensor:  # weights [R, k] -> [N, R]
        real_map, noise_map = (torch.einsum("rk,nkp->nrp", weights.to(v), v).unflatten(2, shape) for v in per_component)
        return (normalize_maps(real_map) - normalize_maps(noise_map)).abs().flatten(2).mean(dim=2)

    return _estimate(statistic, real.shape[1], dim, method, resamples, seed)


def _estimate(
    statistic: Callable[[Tensor, int], Tensor], k: int, dim: int, method: str, resamples: int, seed: int
) -> Estimate:
    """``statistic(weights [R, k], size) -> [N, R]`` (row r: each sampled component's multiplicity / size)
    on all k sampled components, with its standard error."""
    if method not in SE_METHODS:
        raise ValueError(f"unknown standard-error method {method!r}; use one of {', '.join(SE_METHODS)}")
    if not 2 + (method == "jackknife") <= k <= dim:
        raise ValueError(f"{k} sampled components of D = {dim}: the {method} needs {2 + (method == 'jackknife')} to D")
    value = statistic(torch.full((1, k), 1.0 / k), k)[:, 0]
    correction = 1.0 - k / dim  # finite-population correction of the variance
    if correction <= 0:
        return Estimate(value, torch.zeros_like(value))
    if method == "jackknife":
        left_out = statistic((1.0 - torch.eye(k)) / (k - 1), k - 1)  # [N, k]: row i leaves component i out
        variance = (k - 1) / k * (left_out - left_out.mean(dim=1, keepdim=True)).pow(2).sum(dim=1)
    else:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        draws = torch.randint(k, (resamples, k), generator=generator)
        weights = torch.zeros(resamples, k).scatter_add_(1, draws, torch.full((resamples, k), 1.0 / k))
        replicates = statistic(weights, k)  # [N, R]
        variance = replicates.var(dim=1, correction=1) * k / (k - 1)
    return Estimate(value, (variance * correction).sqrt())
