"""Training the explainer on a frozen performer's features: Adam on

    loss = lambda·sum_l mean((F_l - F^_l)² / s_l²)  +  filter_weight·mean_f Loss_f  -  eta·mean log p
           [+ overlap_weight·overlap]

over the images of each mini-batch: the paper's three terms, each scaled to be of order 1 so that their weights
read the same for any layer size and filter count. s_l is the RMS of F_l over the training images (so the first
term is the relative squared error, and trained and random performers, whose activations differ in scale by
orders of magnitude, train alike); Loss_f is the filter loss of :mod:`.templates`, averaged over the filters
(the paper sums over them: multiply filter_weight by the filter count to get its form), or with
``filter_gradient: surrogate`` the original code's surrogate in its place (the exact loss is still logged).
``overlap`` is repreval's own anti-collapse term (:func:`.templates.overlap_loss` of the masked part maps).

At the last mini-batch of each epoch the log keeps how strongly each term pulls on the interpretable filters:
the norm of its gradient with respect to the weights of the track's last conv layer.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from repreval.api import TrainingContext

from .network import PartExplainer
from .templates import overlap_loss


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
        sums = {"loss": 0.0, "reconstruction": 0.0, "filter": 0.0, "overlap": 0.0, "part_share": 0.0}
        pulls: dict[str, float] = {}
        batches = torch.randperm(count, generator=generator).split(settings["batch_size"])
        for number, batch in enumerate(batches):
            explanation = module(features[batch].to(device))
            terms = _terms(module, explanation, targets, batch, device)
            loss = sum(settings[f"{name}_weight"] * value for name, value in terms.items() if name != "log_p")
            loss = loss - settings["eta"] * terms["log_p"]
            assert isinstance(loss, Tensor)
            if number == len(batches) - 1:
                pulls = _pulls(module, terms, settings)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            weight = len(batch) / count
            sums["loss"] += loss.item() * weight
            sums["reconstruction"] += terms["reconstruction"].item() * weight
            sums["filter"] += explanation.losses["filter"].mean().item() * weight
            sums["overlap"] += terms["overlap"].item() * weight
            sums["part_share"] += explanation.part_share.mean().item() * weight
        history.append({key: round(value, 6) for key, value in sums.items()} | pulls)
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


def _terms(module: PartExplainer, explanation, targets: dict[str, Tensor], batch: Tensor, device) -> dict[str, Tensor]:
    """The loss terms of one mini-batch, unweighted: reconstruction (relative squared error summed over the
    targets), filter (exact or surrogate, mean over filters), overlap, and log_p."""
    reconstruction = sum(
        (explanation.reconstructions[name] - targets[name][batch].to(device)).div(scale).pow(2).mean()
        for name, scale in zip(module.target_names, module.target_scales)
    )
    assert isinstance(reconstruction, Tensor)  # at least one target
    filter_term = explanation.losses.get("filter_surrogate", explanation.losses["filter"]).mean()
    return {
        "reconstruction": reconstruction,
        "filter": filter_term,
        "overlap": overlap_loss(explanation.part_maps),
        "log_p": explanation.losses["log_p"],
    }


def _pulls(module: PartExplainer, terms: dict[str, Tensor], settings: dict) -> dict[str, float]:
    """The norm of each weighted term's gradient with respect to the interpretable track's last conv weights."""
    last = module.interpretable[-2]
    assert isinstance(last, torch.nn.Conv2d)  # the track ends conv -> ReLU
    weights = last.weight
    pulls = {}
    for name in ("reconstruction", "filter", "overlap"):
        weighted = settings[f"{name}_weight"] * terms[name]
        if not weighted.requires_grad:
            pulls[f"{name}_pull"] = 0.0
            continue
        (gradient,) = torch.autograd.grad(weighted, weights, retain_graph=True, allow_unused=True)
        pulls[f"{name}_pull"] = float(gradient.norm()) if gradient is not None else 0.0
    return pulls
