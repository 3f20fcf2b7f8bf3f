"""Built-in saliency methods: gradients, activations×gradients, Grad-CAM; Integrated Gradients, SmoothGrad and
expected gradients (gradients at points of their own: :mod:`.points`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import PluginOptionError, SaliencyMethod, hookimpl, normalize_maps

from .points import ExpectedGradients, IntegratedGradients, SmoothGrad

if TYPE_CHECKING:
    from torch import Tensor


class Gradients(SaliencyMethod):
    """Vanilla gradients: R_d = dz_d/da."""

    name = "gradients"
    linear_in_gradient = True

    def attribute(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient


class ActivationsTimesGradients(SaliencyMethod):
    """Activations × gradients: R_d = a ⊙ dz_d/da (Gradient×Input at a hidden layer)."""

    name = "activations_x_gradients"
    linear_in_gradient = True

    def attribute(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return activation * gradient


class GradCAM(SaliencyMethod):
    """Grad-CAM: L_d = ReLU(sum_c alpha_dc a_c) with alpha_dc the spatial mean of dz_d/da_c.

    ``style``: ``layer`` (default, METHOD.md's definition): the maps at the probe layer's resolution, as they
    are. ``reference``: as the paper's reference code computes them, to compare with its numbers: each
    component's map min-max normalised to [0, 1] and upsampled to the input's size (``interpolation``:
    ``bilinear``, the default, or ``nearest``) before the component aggregators read it. The two differ by
    up to ~0.07 in the noise score (ResNet20, CIFAR-10).
    """

    name = "grad_cam"
    spatial = True
    gradient = "spatial_mean"
    STYLES = ("layer", "reference")
    INTERPOLATIONS = ("bilinear", "nearest")

    def __init__(self, style: str = "layer", interpolation: str = "bilinear"):
        for option, value, allowed in (
            ("style", style, self.STYLES),
            ("interpolation", interpolation, self.INTERPOLATIONS),
        ):
            if value not in allowed:
                raise PluginOptionError(f"{option} must be one of {', '.join(allowed)}; got {str(value)[:40]!r}")
        self.style, self.interpolation = style, interpolation

    def attribute(self, activation: Tensor, gradient: Tensor) -> Tensor:
        # gradient [k, B, C, 1, 1] (spatial means), activation [B, C, h, w] -> [k, B, h, w]
        return (gradient * activation).sum(dim=2).relu()

    def finish_maps(self, maps: Tensor, input_shape: tuple[int, ...]) -> Tensor:
        if self.style == "layer":
            return maps
        if len(input_shape) != 4:
            raise PluginOptionError(
                f"grad_cam style reference upsamples to an image's size; this input is {tuple(input_shape)}"
            )
        from torch.nn.functional import interpolate

        size = tuple(input_shape[-2:])
        rows = interpolate(normalize_maps(maps).flatten(0, 1)[:, None], size=size, mode=self.interpolation)
        return rows[:, 0].unflatten(0, maps.shape[:2])


@hookimpl
def register_saliency_methods(register):
    """Register ``gradients``, ``activations_x_gradients``, ``grad_cam``, ``integrated_gradients``,
    ``smoothgrad`` and ``expected_gradients``, with their aliases."""
    register(Gradients, aliases=("vanilla",))
    register(ActivationsTimesGradients, aliases=("act_x_grad", "gradient_x_activation"))
    register(GradCAM, aliases=("gradcam", "grad-cam"))
    register(IntegratedGradients, aliases=("ig", "layer_integrated_gradients"))
    register(SmoothGrad, aliases=("smooth_grad",))
    register(ExpectedGradients)
