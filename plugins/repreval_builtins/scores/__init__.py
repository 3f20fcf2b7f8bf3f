"""Built-in scores: the noise score (informativeness) and the variance score (conciseness) from attribution
maps; the linear probe and the classifier accuracy (downstream usefulness) from embeddings and logits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import AttributionMaps, AttributionScore, PluginOptionError, ScoreValues, hookimpl, normalize_maps

from .downstream import ClassifierAccuracy, LinearProbe

if TYPE_CHECKING:  # the estimators (.estimates) import torch: loaded on first use, not by `repreval list`
    from torch import Tensor


def _present(maps: Tensor | None, which: str) -> Tensor:
    """Component maps of a set the score reads: the engine computes every set a score's ``noise_sets`` ask for."""
    if maps is None:
        raise ValueError(f"the {which} component maps are missing")
    return maps


def _mean_abs_difference(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().flatten(1).mean(dim=1)


class NoiseScore(AttributionScore):
    """NS = mean |N(M(x)) - N(M(noise))|, eq. (1); reference: the same between two noise inputs, eq. (2)."""

    name = "noise_score"
    higher_is_better = True
    noise_sets = 2
    bounds = (0.0, 1.0)
    reads_components = False

    def compute(self, maps: AttributionMaps, embedding_aggregator) -> ScoreValues:
        def aggregated(which: str) -> Tensor:
            return normalize_maps(maps.over_components(which, embedding_aggregator))

        noise = aggregated("noise")
        return ScoreValues(
            values=_mean_abs_difference(aggregated("real"), noise),
            reference=_mean_abs_difference(aggregated("noise_b"), noise),
        )

    def estimate(self, maps: AttributionMaps, embedding_aggregator, dim: int, seed: int) -> ScoreValues:
        from .estimates import estimate_noise_score

        real, noise, noise_b = (
            _present(maps.real, "real"),
            _present(maps.noise, "noise"),
            _present(maps.noise_b, "noise_b"),
        )
        value = estimate_noise_score(real, noise, dim, embedding_aggregator, seed=seed)
        reference = estimate_noise_score(noise_b, noise, dim, embedding_aggregator, seed=seed)
        return ScoreValues(values=value.value, reference=reference.value, standard_error=value.standard_error)


class VarianceScore(AttributionScore):
    """VS = mean over pixels of Var_d N(phi_C(R_d)), biased, eq. (3); bounded by 1/4 (Popoviciu).

    ``binarize``: threshold the normalised maps at 0.5 first. Reference: the same score on noise inputs.

    ``sparsity_aware``: divide by the ceiling the maps' sparsity allows. With f the mean of the (normalised,
    or binarised) maps over components and pixels, no set of maps with values in [0, 1] and that mean can
    have a variance score above f(1 - f) (each pixel's variance is at most m_p(1 - m_p) for its mean m_p, as
    x² <= x on [0, 1], and the mean of m_p(1 - m_p) is at most f(1 - f) by concavity), and binary maps that
    put the same fraction f of components on at every pixel reach it. VS / (f(1 - f)) is in [0, 1]: 1 when the
    components spread their mass as evenly over the pixels as the sparsity allows, whatever f is. Sparse maps
    (few pixels on, as thresholding a trained network's peaked maps gives) can no longer score low merely
    for being sparse. Maps that are all 0 or all 1 (f(1 - f) = 0) score 0.
    """

    name = "variance_score"
    higher_is_better = True
    uses_embedding_aggregator = False
    noise_sets = 1
    noise_in_value = False  # the noise maps give only the chance level
    bounds = (0.0, 0.25)

    def __init__(self, binarize: bool = False, sparsity_aware: bool = False):
        for option, value in (("binarize", binarize), ("sparsity_aware", sparsity_aware)):
            if not isinstance(value, bool):
                raise PluginOptionError(f"{option} must be true or false, got {value!r}")
        self.binarize, self.sparsity_aware = binarize, sparsity_aware
        if sparsity_aware:
            self.bounds = (0.0, 1.0)

    def _score(self, component_maps: Tensor) -> Tensor:
        from .estimates import normalized_components, relative_to_ceiling

        normalized = normalized_components(component_maps, self.binarize)
        score = normalized.var(dim=1, correction=0).flatten(1).mean(dim=1)
        return relative_to_ceiling(score, normalized.flatten(1).mean(dim=1)) if self.sparsity_aware else score

    def compute(self, maps: AttributionMaps, embedding_aggregator) -> ScoreValues:
        return ScoreValues(
            values=self._score(_present(maps.real, "real")), reference=self._score(_present(maps.noise, "noise"))
        )

    def estimate(self, maps: AttributionMaps, embedding_aggregator, dim: int, seed: int) -> ScoreValues:
        from .estimates import estimate_variance_score

        value, reference = (
            estimate_variance_score(
                _present(which, name), dim, binarize=self.binarize, sparsity_aware=self.sparsity_aware, seed=seed
            )
            for which, name in ((maps.real, "real"), (maps.noise, "noise"))
        )
        return ScoreValues(values=value.value, reference=reference.value, standard_error=value.standard_error)


@hookimpl
def register_scores(register):
    """Register ``noise_score``, ``variance_score``, ``linear_probe`` and ``classifier_accuracy``, with aliases."""
    register(NoiseScore, aliases=("ns",))
    register(VarianceScore, aliases=("vs",))
    register(LinearProbe, aliases=("probe",))
    register(ClassifierAccuracy, aliases=("accuracy",))
