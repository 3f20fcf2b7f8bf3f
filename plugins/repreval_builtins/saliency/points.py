"""Saliency methods that take gradients away from the real activation: Integrated Gradients along a path from a
baseline, SmoothGrad at noisy copies, expected gradients at random points between reference activations and the
real one. All work in the probe layer's space (Captum's *layer* attributions): the engine evaluates the gradients
at ``Points.at`` and sums them with ``Points.weights``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import PluginOptionError, Points, SaliencyMethod

if TYPE_CHECKING:  # torch is imported where the methods run: listing plugins stays light
    import torch
    from torch import Tensor

#: Integrated Gradients quadratures: Gauss-Legendre nodes, or Riemann sums at the left/right ends or middles of
#: equal steps, or the trapezoid rule (Captum's names)
QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature_rule(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    """(alphas, weights) [steps] of ``rule`` on [0, 1]: the integral of f is about sum_i weights_i f(alphas_i)."""
    import numpy as np
    import torch

    if rule == "gausslegendre":
        nodes, node_weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]
        return torch.tensor((nodes + 1) / 2), torch.tensor(node_weights / 2)
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise PluginOptionError("the trapezoid rule needs steps >= 2")
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    alphas = (torch.arange(steps, dtype=torch.float64) + offset) / steps
    return alphas, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


def _positive_int(option: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PluginOptionError(f"{option} must be an integer >= {low}; got {str(value)[:40]!r}")
    return value


def _one_of(option: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise PluginOptionError(f"{option} must be one of {', '.join(allowed)}; got {str(value)[:40]!r}")
    return str(value)


class IntegratedGradients(SaliencyMethod):
    """Layer Integrated Gradients: R_d = (a − a0) ⊙ ∫ dz_d/da(a0 + α(a − a0)) dα, by a quadrature.

    Options: ``baseline``: ``zero`` (default), ``channel_mean`` (each channel's spatial mean of the input's own
    activation), or ``blank`` (the layer's activation for an all-zero network input: Captum's
    ``LayerIntegratedGradients`` default); ``steps`` (default 16: the cost is steps × that of plain gradients);
    ``quadrature``: ``gausslegendre`` (default) or ``riemann_left/right/middle/trapezoid``. Summed over channels
    and positions, the attributions of z_d equal z_d(a) − z_d(a0) up to the quadrature's error (completeness);
    prefix tokens (a class token) keep their real values along the path.
    """

    name = "integrated_gradients"
    uses_points = True
    BASELINES = ("zero", "channel_mean", "blank")

    def __init__(self, baseline: str = "zero", steps: int = 16, quadrature: str = "gausslegendre"):
        self.baseline = _one_of("baseline", baseline, self.BASELINES)
        self.steps = _positive_int("steps", steps)
        self.quadrature = _one_of("quadrature", quadrature, QUADRATURES)
        self.alphas, self.weights = quadrature_rule(self.quadrature, self.steps)

    def reference_inputs(self, inputs: Tensor, generator: torch.Generator) -> Tensor | None:
        import torch

        return torch.zeros_like(inputs[:1]) if self.baseline == "blank" else None

    def points(self, activation: Tensor, reference: Tensor | None, generator: torch.Generator) -> Points:
        import torch

        if self.baseline == "blank" and reference is not None:
            baseline = reference.expand_as(activation)
        elif self.baseline == "channel_mean":
            baseline = activation.mean(dim=(-2, -1), keepdim=True).expand_as(activation)
        else:
            baseline = torch.zeros_like(activation)
        shape = (-1,) + (1,) * activation.dim()
        alphas = self.alphas.to(activation).reshape(shape)
        weights = self.weights.to(activation).reshape(shape)
        difference = activation - baseline
        return Points(baseline + alphas * difference, weights * difference)


class SmoothGrad(SaliencyMethod):
    """SmoothGrad at the probe layer: the mean over ``samples`` noisy copies a + ε (ε ~ N(0, (σ·range)²), range =
    max − min of the input's activation at the layer) of dz_d/da, or with ``of: activations_x_gradients`` of
    (a + ε) ⊙ dz_d/da(a + ε) (Captum's NoiseTunnel over Saliency / InputXGradient). Options: ``samples``
    (default 16), ``sigma`` (default 0.15, as a fraction of the range, the SmoothGrad paper's 10-20 %), ``of``
    (``gradients``, the default, or ``activations_x_gradients``). Not the suite's ``evaluation.smoothing``, which
    perturbs the network *input*."""

    name = "smoothgrad"
    uses_points = True
    BASES = ("gradients", "activations_x_gradients")

    def __init__(self, samples: int = 16, sigma: float = 0.15, of: str = "gradients"):
        self.samples = _positive_int("samples", samples)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < float("inf"):
            raise PluginOptionError(f"sigma must be a number >= 0; got {str(sigma)[:40]!r}")
        self.sigma, self.of = float(sigma), _one_of("of", of, self.BASES)

    def points(self, activation: Tensor, reference: Tensor | None, generator: torch.Generator) -> Points:
        import torch

        flat = activation.flatten(1)
        spread = (flat.amax(dim=1) - flat.amin(dim=1)).reshape(1, -1, *(1,) * (activation.dim() - 1))
        noise = torch.randn((self.samples, *activation.shape), generator=generator).to(activation)
        at = activation + self.sigma * spread * noise
        weights = at / self.samples if self.of == "activations_x_gradients" else at.new_full((1,), 1 / self.samples)
        return Points(at, weights)


class ExpectedGradients(SaliencyMethod):
    """Expected gradients (GradientSHAP without input noise) at the probe layer: the mean over ``samples`` draws
    of (a − b) ⊙ dz_d/da(b + α(a − b)), b one of the reference activations and α ~ U(0, 1), both drawn per input
    and sample. ``reference``: ``noise`` (default: the layer's activations of ``references`` seeded standard
    normal network inputs, i.e. noise in the preprocessed input space) or ``blank`` (one all-zero input). Its
    expectation is Integrated Gradients averaged over the reference baselines."""

    name = "expected_gradients"
    uses_points = True
    REFERENCES = ("noise", "blank")

    def __init__(self, samples: int = 16, reference: str = "noise", references: int = 8):
        self.samples = _positive_int("samples", samples)
        self.reference = _one_of("reference", reference, self.REFERENCES)
        self.references = _positive_int("references", references)

    def reference_inputs(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        import torch

        if self.reference == "blank":
            return torch.zeros_like(inputs[:1])
        if not inputs.is_floating_point():
            raise PluginOptionError("expected_gradients reference noise needs image inputs; use reference: blank")
        return torch.randn((self.references, *inputs.shape[1:]), generator=generator).to(inputs)

    def points(self, activation: Tensor, reference: Tensor | None, generator: torch.Generator) -> Points:
        import torch

        assert reference is not None  # reference_inputs always gives some
        count = (self.samples, activation.shape[0])
        chosen = torch.randint(len(reference), count, generator=generator)
        alphas = torch.rand(count, generator=generator).to(activation).reshape(*count, *(1,) * (activation.dim() - 1))
        baselines = reference.to(activation)[chosen]  # [S, B, C, h, w]
        difference = activation - baselines
        return Points(baselines + alphas * difference, difference / self.samples)
