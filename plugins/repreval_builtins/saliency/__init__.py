"""Built-in saliency methods: gradients, activations×gradients, Grad-CAM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import SaliencyMethod, hookimpl

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
    """Grad-CAM: L_d = ReLU(sum_c alpha_dc a_c) with alpha_dc the spatial mean of dz_d/da_c."""

    name = "grad_cam"
    spatial = True
    gradient = "spatial_mean"

    def attribute(self, activation: Tensor, gradient: Tensor) -> Tensor:
        # gradient [k, B, C, 1, 1] (spatial means), activation [B, C, h, w] -> [k, B, h, w]
        return (gradient * activation).sum(dim=2).relu()


@hookimpl
def register_saliency_methods(register):
    """Register ``gradients``, ``activations_x_gradients`` and ``grad_cam``, with their aliases."""
    register(Gradients, aliases=("vanilla",))
    register(ActivationsTimesGradients, aliases=("act_x_grad", "gradient_x_activation"))
    register(GradCAM, aliases=("gradcam", "grad-cam"))
