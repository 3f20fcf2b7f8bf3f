"""The explainer network of Zhang, Yang, Wu: two encoder tracks, each normalised, a gate, a decoder per
reconstructed layer.

F [B, C, h, w] (divided by its training RMS, so trained and random performers train alike)
  -> interpretable track: conv 3×3 -> ReLU -> conv 3×3 -> ReLU = x (K filters, filter loss on x) -> peak mask
     -> norm
  -> ordinary track:      conv 3×3 -> ReLU -> conv 3×3 -> ReLU (K channels: textures, other concepts) -> norm
  -> y = p·y_interp + (1 - p)·y_ordin, p = sigmoid(linear(global average of F)), one p per image
  -> decoder per target layer: conv 3×3 -> ReLU -> resize to the target's h×w -> conv 3×3 (× the target's RMS)

The norm layers make the two tracks' outputs comparable in size before they are mixed (the paper's norm layers),
so that p weighs signals of the same scale: without them a track can dominate the mix whatever p says.
``forward(F, track=...)`` keeps one track's contribution and zeroes the other's (the gate as trained): the host
measures from it what each track alone carries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repreval.api import Explanation

from .templates import filter_loss, peak_mask, surrogate_filter_loss, template_matrix

#: The tracks ``forward(track=...)`` can keep alone
TRACKS = ("interpretable", "ordinary")


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class TrackNorm(nn.Module):
    """``x / s``, s the root mean square of the track's output: over the batch while training (gradients flow
    through it, as through batch norm) and its running average (momentum 0.1) when evaluating. One scalar
    per track, so the relative sizes of its channels and positions (the parts' maps) are kept."""

    running_rms: Tensor

    def __init__(self, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_rms", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            rms = x.pow(2).mean().add(1e-12).sqrt()
            with torch.no_grad():
                self.running_rms.lerp_(rms.detach(), self.momentum)
        else:
            rms = self.running_rms
        return x / rms.clamp_min(1e-6)


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
        filter_gradient: str = "exact",
    ):
        super().__init__()
        channels, height, width = source
        self.beta, self.filter_gradient = beta, filter_gradient
        self.interpretable = nn.Sequential(_conv(channels, hidden), nn.ReLU(), _conv(hidden, filters), nn.ReLU())
        self.ordinary = nn.Sequential(_conv(channels, hidden), nn.ReLU(), _conv(hidden, filters), nn.ReLU())
        self.interpretable_norm, self.ordinary_norm = TrackNorm(), TrackNorm()
        self.gate = nn.Linear(channels, 1)
        self.target_names = list(targets)
        self.target_sizes = {name: shape[1:] for name, shape in targets.items()}
        self.decoder_hidden = nn.ModuleDict({_key(name): _conv(filters, hidden) for name in targets})
        self.decoder_out = nn.ModuleDict({_key(name): _conv(hidden, shape[0]) for name, shape in targets.items()})
        self.register_buffer("templates", template_matrix(height, width, beta, tau))
        self.register_buffer("source_scale", torch.ones(()))  # RMS of the training features
        self.register_buffer("target_scales", torch.ones(len(targets)))

    def forward(self, features: Tensor, track: str | None = None) -> Explanation:
        inputs = features / self.source_scale
        maps = self.interpretable(inputs)  # x: the filter loss reads these
        interpretable = self.interpretable_norm(peak_mask(maps, self.beta))
        ordinary = self.ordinary_norm(self.ordinary(inputs))
        logit = self.gate(inputs.mean(dim=(2, 3))).squeeze(1)
        share = torch.sigmoid(logit)  # p: [B]
        p = share.view(-1, 1, 1, 1)
        kept = {"interpretable": p * interpretable, "ordinary": (1 - p) * ordinary}
        if track is not None and track not in kept:
            raise ValueError(f"unknown track {track!r}; the tracks are {', '.join(TRACKS)}")
        mixed = kept[track] if track is not None else kept["interpretable"] + kept["ordinary"]
        reconstructions = {}
        for i, name in enumerate(self.target_names):
            hidden = F.relu(self.decoder_hidden[_key(name)](mixed))
            if tuple(hidden.shape[-2:]) != tuple(self.target_sizes[name]):
                hidden = F.interpolate(
                    hidden, size=tuple(self.target_sizes[name]), mode="bilinear", align_corners=False
                )
            reconstructions[name] = self.decoder_out[_key(name)](hidden) * self.target_scales[i]
        losses = {"filter": filter_loss(maps, self.templates), "log_p": F.logsigmoid(logit).mean()}
        if self.filter_gradient == "surrogate":
            losses["filter_surrogate"] = surrogate_filter_loss(maps, self.beta)
        return Explanation(reconstructions, share, interpretable, losses)


def _key(layer: str) -> str:
    """A module-dict key for a layer name (no dots allowed there)."""
    return layer.replace(".", "__")
