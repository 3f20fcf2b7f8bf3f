"""Training of the autoencoders: Adam on MSE reconstruction (+ cross-entropy where there is a classifier),
optionally with attribution scores as constraints (the paper's section 4.5)::

    loss = CE + MSE - sum_s lambda_s · score_s      (scores are maximised)

Every ``constraint_every`` mini-batches the scores named in ``constraints`` (any registered attribution
score, e.g. ``{noise_score: 0.1, variance_score: 0.1}``) are computed on the mini-batch at
``constraint_layer`` with the batched engine and ``create_graph=True`` (double backprop), so they are
exactly the scores repreval reports. Noise inputs for the noise score come from the training seed.
The constraint pass runs in eval mode (BatchNorm on its running statistics, as in evaluation, so the
noise inputs never leak into them). Piece-wise linear activations give zero second derivatives: use the
softplus encoder.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from repreval.api import (
    AttributionMaps,
    AttributionScore,
    Network,
    Registries,
    ReprevalError,
    component_maps,
    suggest,
    uniform_noise,
)

from .networks import Autoencoder

TRAINING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 1e-3,
    "constraints": {},  # score name -> lambda
    "constraint_every": 20,
    "constraint_layer": "encoder.block2.conv",  # the second conv layer (its output, before BN and softplus)
    "constraint_saliency": "gradients",
    "constraint_channels": "abs",
    "constraint_components": "mean",
}


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
    constraints = settings["constraints"]
    if not isinstance(constraints, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in constraints.items()
    ):
        raise ReprevalError(
            f"training option constraints must map score names to lambdas, got {constraints!r}",
            fix="e.g. constraints: {noise_score: 0.1}",
        )
    every = settings["constraint_every"]
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ReprevalError(f"training option constraint_every must be a positive integer, got {every!r}")
    return settings


class ScoreConstraints:
    """The ``- sum lambda_s · score_s`` term: attribution scores at one layer, differentiable."""

    def __init__(self, settings: dict, seed: int, registries: Registries):
        self.lambdas = {name: float(weight) for name, weight in settings["constraints"].items() if weight}
        self.scores = {}
        for name in self.lambdas:
            score = registries.score.create(name, {})
            if not isinstance(score, AttributionScore):
                raise ReprevalError(
                    f"{name!r} is not an attribution score and cannot constrain training",
                    fix="use noise_score or variance_score",
                )
            self.scores[name] = score
        self.layer = settings["constraint_layer"]
        self.method = registries.saliency.create(settings["constraint_saliency"], {})
        self.channels = registries.aggregator.create(settings["constraint_channels"], {})
        self.components = registries.aggregator.create(settings["constraint_components"], {})
        self.generator = torch.Generator().manual_seed(seed)
        self.needs_noise = any(score.noise_sets and score.noise_in_value for score in self.scores.values())

    @property
    def active(self) -> bool:
        """Whether any score constrains training (a non-zero lambda)."""
        return bool(self.lambdas)

    def check(self, network: Network) -> None:
        """An unknown constraint layer fails before training starts."""
        if self.active and self.layer.partition(":")[0] not in dict(network.module.named_modules()):
            names = [name for name, _ in network.module.named_modules() if name]
            raise ReprevalError(f"unknown constraint_layer {self.layer!r}", fix=suggest(self.layer, names))

    def loss(self, network: Network, inputs: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The differentiable term ``-sum lambda_s · score_s`` on ``inputs`` (maps computed in eval mode), and
        each score's batch mean as a float."""
        module = network.module
        module.eval()  # BatchNorm on running statistics, as in evaluation; noise never touches them
        try:

            def maps(batch: Tensor) -> Tensor:
                return component_maps(
                    network, self.layer, batch, self.method, self.channels, strategy="reverse", create_graph=True
                )

            real = maps(inputs)
            noise = None
            if self.needs_noise:  # uniform-noise images as in evaluation, from the training seed
                noise = maps(
                    network.input_spec.normalize(uniform_noise(inputs.shape, generator=self.generator)).to(inputs)
                )
        finally:
            module.train()
        # The loss needs no chance levels: noise sets that only give references are not computed.
        fill = real if noise is None else noise
        attribution = AttributionMaps(real, fill, fill)
        total = inputs.new_zeros(())
        values = {}
        for name, score in self.scores.items():
            value = score.compute(attribution, self.components).values.mean()
            total = total - self.lambdas[name] * value
            values[name] = float(value.detach())
        return total, values


def _autoencoder(network: Network) -> Autoencoder:
    module = network.module
    if not isinstance(module, Autoencoder):
        raise ReprevalError(f"expected an ae: autoencoder network, got a {type(module).__name__} module")
    return module


def training_loss(network: Network, inputs: Tensor, labels: Tensor | None) -> Tensor:
    """MSE between input and reconstruction, plus cross-entropy of the classifier's logits if it has one."""
    module = _autoencoder(network)
    code = module.encoder(inputs)
    loss = F.mse_loss(module.decoder(code), inputs)
    if module.classifier is not None:
        if labels is None:
            raise ReprevalError("this autoencoder has a classifier and needs labels to train")
        loss = loss + F.cross_entropy(module.classifier(code), labels)
    return loss


def train_autoencoder(
    network: Network, inputs: Tensor, labels: Tensor | None, options: dict, seed: int, registries: Registries
) -> dict:
    """Train in place with Adam, mini-batches shuffled by a generator seeded with ``seed``; return a log."""
    settings = training_settings(options)
    module = network.module
    device = next(module.parameters()).device
    inputs = inputs.to(device)
    labels = None if labels is None else labels.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings["lr"])
    generator = torch.Generator().manual_seed(seed)
    constraints = ScoreConstraints(settings, seed, registries)
    constraints.check(network)
    score_log: dict[str, list[float]] = {name: [] for name in constraints.lambdas}
    started = time.perf_counter()
    module.train()
    step = 0
    for _ in range(settings["epochs"]):
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=generator).split(settings["batch_size"]):
            loss = training_loss(network, inputs[batch], None if labels is None else labels[batch])
            if constraints.active and step % settings["constraint_every"] == 0:
                penalty, values = constraints.loss(network, inputs[batch])
                loss = loss + penalty
                for name, value in values.items():
                    score_log[name].append(value)
            step += 1
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
    log: dict[str, float] = {
        "epochs": settings["epochs"],
        "final_loss": total / len(inputs),  # mean over the last epoch's mini-batches
        "seconds": time.perf_counter() - started,
    }
    for name, logged in score_log.items():  # the constrained scores at the first and last constraint step
        log[f"{name}_first"], log[f"{name}_last"] = logged[0], logged[-1]
    if network.classify is not None:
        if labels is None:
            raise ReprevalError("this autoencoder has a classifier and needs labels to train")
        log["train_accuracy"] = accuracy(network, inputs, labels)
    return log


@torch.no_grad()
def accuracy(network: Network, inputs: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``network.classify`` in eval mode (the module's mode is restored)."""
    classify = network.classify
    if classify is None:
        raise ReprevalError("accuracy needs a network with a classifier")
    module = network.module
    was_training = module.training
    module.eval()
    try:
        correct = sum(
            (classify(chunk).argmax(dim=1) == target).sum().item()
            for chunk, target in zip(inputs.split(batch_size), labels.split(batch_size))
        )
    finally:
        module.train(was_training)
    return correct / len(inputs)
