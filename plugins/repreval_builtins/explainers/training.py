"""Training the explainer on a frozen performer's features: Adam on

    loss = lambda·sum_l mean((F_l - F^_l)² / s_l²)  +  filter_weight·mean_f Loss_f  -  eta·mean log p

over the images of each mini-batch: the paper's three terms, each scaled to be of order 1 so that their weights
read the same for any layer size and filter count. s_l is the RMS of F_l over the training images (so the first
term is the relative squared error, and trained and random performers, whose activations differ in scale by
orders of magnitude, train alike); Loss_f is the filter loss of :mod:`.templates`, averaged over the filters
(the paper sums over them: multiply filter_weight by the filter count to get its form).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from repreval.api import TrainingContext

from .network import PartExplainer


def feature_scale(features: Tensor) -> Tensor:
    """The root mean square of ``features`` (1 where they are all zero)."""
    rms = features.double().pow(2).mean().sqrt().float()
    return torch.where(rms > 0, rms, torch.ones_like(rms))


def train_explainer(
    module: PartExplainer,
    features: Tensor,
    targets: dict[str, Tensor],
    settings: dict,
    seed: int,
    context: TrainingContext,
) -> dict:
    """Train ``module`` in place with mini-batches shuffled by a generator seeded with ``seed``; return a log."""
    device = torch.device(context.device)
    module.source_scale.fill_(float(feature_scale(features)))
    for i, name in enumerate(module.target_names):
        module.target_scales[i] = feature_scale(targets[name])
    module.to(device).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=settings["lr"])
    generator = torch.Generator().manual_seed(seed)
    epochs, count = settings["epochs"], len(features)
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        sums = {"loss": 0.0, "reconstruction": 0.0, "filter": 0.0, "part_share": 0.0}
        for batch in torch.randperm(count, generator=generator).split(settings["batch_size"]):
            inputs = features[batch].to(device)
            explanation = module(inputs)
            reconstruction = sum(
                (explanation.reconstructions[name] - targets[name][batch].to(device)).div(scale).pow(2).mean()
                for name, scale in zip(module.target_names, module.target_scales)
            )
            assert isinstance(reconstruction, Tensor)  # at least one target
            loss = (
                settings["reconstruction_weight"] * reconstruction
                + settings["filter_weight"] * explanation.losses["filter"].mean()
                - settings["eta"] * explanation.losses["log_p"]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            weight = len(batch) / count
            sums["loss"] += loss.item() * weight
            sums["reconstruction"] += reconstruction.item() * weight
            sums["filter"] += explanation.losses["filter"].mean().item() * weight
            sums["part_share"] += explanation.part_share.mean().item() * weight
        history.append({key: round(value, 6) for key, value in sums.items()})
        context.progress(
            (epoch + 1) / epochs,
            f"epoch {epoch + 1}/{epochs}: loss {sums['loss']:.4f}, p {sums['part_share']:.3f}",
        )
    module.eval()
    seconds = time.perf_counter() - started
    return {
        "epochs": epochs,
        "seconds": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1),
        "images": count,
        "history": history,
    }
