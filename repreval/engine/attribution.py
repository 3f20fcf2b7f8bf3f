"""Per-component attribution maps of an embedding with respect to a probe layer.

For every embedding component ``z_d`` the saliency method gives ``R_d`` (C×h×w) and the channel
aggregator reduces it to an h×w map. All D components are computed in chunks of ``chunk_size``
through ``torch.func.vmap`` over one ``vjp`` (one forward per batch, one batched backward per chunk),
and channels are aggregated inside each chunk, so memory holds D×h×w maps, never D×C×h×w.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..api import Aggregator, Network, SaliencyMethod
from .probe import Probe, as_feature_map


@dataclass(frozen=True)
class Smoothing:
    """Expected-gradients style smoothing: average attributions over ``samples`` inputs
    ``x_s = t·(x + sigma·eps) + (1 - t)·0`` with eps ~ N(0, I) and, if ``random_scale``, t ~ U(0, 1)
    (else t = 1). Applied to the preprocessed input. The default is the plain method."""

    samples: int = 1
    sigma: float = 0.0
    random_scale: bool = False

    @property
    def active(self) -> bool:
        return self.samples > 1 or self.sigma > 0 or self.random_scale

    def perturb(self, inputs: Tensor, seed: int) -> Tensor:
        """[B, ...] -> [B * samples, ...], sample-major within each input."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        repeated = inputs.repeat_interleave(self.samples, dim=0)
        noise = torch.randn(repeated.shape, generator=generator).to(repeated)
        scale_shape = (repeated.shape[0],) + (1,) * (repeated.dim() - 1)
        if self.random_scale:
            scale = torch.rand(scale_shape, generator=generator).to(repeated)
        else:
            scale = torch.ones(scale_shape, dtype=repeated.dtype, device=repeated.device)
        return scale * (repeated + self.sigma * noise)


def component_maps(
    network: Network,
    probe: Probe,
    inputs: Tensor,
    method: SaliencyMethod,
    channel_aggregator: Aggregator | None,
    *,
    chunk_size: int = 16,
    smoothing: Smoothing = Smoothing(),
    seed: int = 0,
    create_graph: bool = False,
) -> Tensor:
    """Maps [B, D, h, w] of every embedding component for a batch of preprocessed inputs.

    ``channel_aggregator`` is ignored (may be None) for spatial methods such as Grad-CAM.
    ``create_graph``: keep the maps differentiable w.r.t. the parameters (scores as training losses);
    otherwise no graph is recorded, which saves time and keeps memory at one chunk.
    """
    with torch.set_grad_enabled(create_graph):
        return _component_maps(network, probe, inputs, method, channel_aggregator, chunk_size, smoothing, seed)


def _component_maps(network, probe, inputs, method, channel_aggregator, chunk_size, smoothing, seed) -> Tensor:
    if not method.spatial and channel_aggregator is None:
        raise ValueError(f"saliency method {method.name!r} needs a channel aggregator")
    batch = inputs.shape[0]
    samples = smoothing.samples if smoothing.active else 1
    if smoothing.active:
        inputs = smoothing.perturb(inputs, seed)

    activation, _ = probe.capture(network, inputs)
    tail = probe.tail(network, inputs)
    embedding, pullback = torch.func.vjp(tail, activation)
    if embedding.dim() != 2:
        raise ValueError(f"the embedding must be [B, D]; got shape {tuple(embedding.shape)}")
    dim = embedding.shape[1]
    feature_map = as_feature_map(activation, probe.spec)  # [B*S, C, h, w]
    batched_pullback = torch.func.vmap(pullback)

    chunks = []
    for start in range(0, dim, chunk_size):
        stop = min(dim, start + chunk_size)
        rows = stop - start
        # Cotangents: row r selects component start + r for every input of the batch.
        cotangents = torch.zeros(rows, *embedding.shape, dtype=embedding.dtype, device=embedding.device)
        cotangents[torch.arange(rows), :, torch.arange(start, stop)] = 1.0
        (gradient,) = batched_pullback(cotangents)
        gradient = gradient.reshape(rows, *feature_map.shape)  # [k, B*S, C, h, w]
        if method.gradient == "spatial_mean":
            gradient = gradient.mean(dim=(-2, -1), keepdim=True)
        attribution = method.attribute(feature_map, gradient)
        if samples > 1:
            attribution = attribution.reshape(rows, batch, samples, *attribution.shape[2:]).mean(dim=2)
        if not method.spatial:
            scale = attribution.detach().abs().flatten(2).amax(dim=-1)  # [k, B]
            attribution = channel_aggregator(attribution, dim=2)  # [k, B, h, w]
            attribution = zero_rounding_noise(attribution, scale)
        chunks.append(attribution)
    return torch.cat(chunks).transpose(0, 1)  # [B, D, h, w]


#: A channel-aggregated map whose magnitude is below this fraction of its raw attribution's magnitude
#: is rounding noise (e.g. channel means that cancel exactly before a LayerNorm). It is set to exactly 0,
#: so normalisation cannot blow the noise up into a fake map; scores count such maps as degenerate.
NEAR_ZERO_RTOL = 1e-5


def zero_rounding_noise(maps: Tensor, raw_scale: Tensor) -> Tensor:
    """Zero every [h, w] map of ``maps`` [k, B, h, w] that is negligible next to ``raw_scale`` [k, B]."""
    magnitude = maps.detach().abs().flatten(2).amax(dim=-1)
    negligible = magnitude <= NEAR_ZERO_RTOL * raw_scale
    return maps.masked_fill(negligible[..., None, None], 0.0)
