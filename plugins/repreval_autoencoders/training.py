"""Training of the autoencoders: Adam on MSE reconstruction (+ cross-entropy where there is a classifier)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from repreval.api import Network, ReprevalError
from repreval.registry import suggest

TRAINING_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 1e-3}


def training_settings(options: dict) -> dict:
    """``options`` over the defaults, checked."""
    unknown = [key for key in options if key not in TRAINING_DEFAULTS]
    if unknown:
        raise ReprevalError(f"unknown training option {unknown[0]!r}", fix=suggest(unknown[0], TRAINING_DEFAULTS))
    settings = {**TRAINING_DEFAULTS, **options}
    for key in ("epochs", "batch_size"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ReprevalError(f"training option {key} must be a positive integer, got {value!r}")
    lr = settings["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ReprevalError(f"training option lr must be a positive number, got {lr!r}")
    return settings


def training_loss(network: Network, inputs: Tensor, labels: Tensor | None) -> Tensor:
    """MSE between input and reconstruction, plus cross-entropy of the classifier's logits if it has one."""
    module = network.module
    code = module.encoder(inputs)
    loss = F.mse_loss(module.decoder(code), inputs)
    if module.classifier is not None:
        loss = loss + F.cross_entropy(module.classifier(code), labels)
    return loss


def train_autoencoder(network: Network, inputs: Tensor, labels: Tensor | None, options: dict, seed: int) -> dict:
    """Train in place with Adam, mini-batches shuffled by a generator seeded with ``seed``; return a log."""
    settings = training_settings(options)
    module = network.module
    device = next(module.parameters()).device
    inputs = inputs.to(device)
    labels = None if labels is None else labels.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings["lr"])
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    module.train()
    for _ in range(settings["epochs"]):
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=generator).split(settings["batch_size"]):
            loss = training_loss(network, inputs[batch], None if labels is None else labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
    log = {
        "epochs": settings["epochs"],
        "final_loss": total / len(inputs),  # mean over the last epoch's mini-batches
        "seconds": time.perf_counter() - started,
    }
    if network.classify is not None:
        log["train_accuracy"] = accuracy(network, inputs, labels)
    return log


@torch.no_grad()
def accuracy(network: Network, inputs: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``network.classify`` in eval mode (the module's mode is restored)."""
    module = network.module
    was_training = module.training
    module.eval()
    try:
        correct = sum(
            (network.classify(chunk).argmax(dim=1) == target).sum().item()
            for chunk, target in zip(inputs.split(batch_size), labels.split(batch_size))
        )
    finally:
        module.train(was_training)
    return correct / len(inputs)
