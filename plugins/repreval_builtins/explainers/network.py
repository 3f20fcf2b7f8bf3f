"""The explainer network of Zhang, Yang, Wu: two encoder tracks, a gate, a decoder per reconstructed layer.

F [B, C, h, w] (divided by its training RMS, so trained and random performers train alike)
  -> interpretable track: conv 3×3 -> ReLU -> conv 3×3 -> ReLU = x (K filters, filter loss on x) -> peak mask
  -> ordinary track:      conv 3×3 -> ReLU -> conv 3×3 -> ReLU (K channels: textures, other concepts)
  -> y = p·y_interp + (1 - p)·y_ordin, p = sigmoid(linear(global average of F)), one p per image
  -> decoder per target layer: conv 3×3 -> ReLU -> resize to the target's h×w -> conv 3×3 (× the target's RMS)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repreval.api import Explanation

from .templates import filter_loss, peak_mask, template_matrix


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class PartExplainer(nn.Module):
    """The explainer for one feature map of shape ``source`` (C, h, w), reconstructing ``targets``."""

    templates: Tensor  # buffers, for type checkers
    source_scale: Tensor
    target_scales: Tensor

    def __init__(
        self,
        source: tuple[int, int, int],
        targets: dict[str, tuple[int, int, int]],
        filters: int,
        hidden: int,
        beta: float,
        tau: float | None,
    ):
        super().__init__()
        channels, height, width = source
        self.beta = beta
        self.interpretable = nn.Sequential(_conv(channels, hidden), nn.ReLU(), _conv(hidden, filters), nn.ReLU())
        self.ordinary = nn.Sequential(_conv(channels, hidden), nn.ReLU(), _conv(hidden, filters), nn.ReLU())
        self.gate = nn.Linear(channels, 1)
        self.target_names = list(targets)
        self.target_sizes = {name: shape[1:] for name, shape in targets.items()}
        self.decoder_hidden = nn.ModuleDict({_key(name): _conv(filters, hidden) for name in targets})
        self.decoder_out = nn.ModuleDict({_key(name): _conv(hidden, shape[0]) for name, shape in targets.items()})
        self.register_buffer("templates", template_matrix(height, width, beta, tau))
        self.register_buffer("source_scale", torch.ones(()))  # RMS of the training features
        self.register_buffer("target_scales", torch.ones(len(targets)))

    def forward(self, features: Tensor) -> Explanation:
        inputs = features / self.source_scale
        maps = self.interpretable(inputs)  # x: the filter loss reads these
        interpretable = peak_mask(maps, self.beta)
        ordinary = self.ordinary(inputs)
        logit = self.gate(inputs.mean(dim=(2, 3))).squeeze(1)
        share = torch.sigmoid(logit)  # p: [B]
        mixed = share.view(-1, 1, 1, 1) * interpretable + (1 - share.view(-1, 1, 1, 1)) * ordinary
        reconstructions = {}
        for i, name in enumerate(self.target_names):
            hidden = F.relu(self.decoder_hidden[_key(name)](mixed))
            if tuple(hidden.shape[-2:]) != tuple(self.target_sizes[name]):
                hidden = F.interpolate(
                    hidden, size=tuple(self.target_sizes[name]), mode="bilinear", align_corners=False
                )
            reconstructions[name] = self.decoder_out[_key(name)](hidden) * self.target_scales[i]
        losses = {"filter": filter_loss(maps, self.templates), "log_p": F.logsigmoid(logit).mean()}
        return Explanation(reconstructions, share, interpretable, losses)


def _key(layer: str) -> str:
    """A module-dict key for a layer name (no dots allowed there)."""
    return layer.replace(".", "__")
