"""Small classifier CNNs trained in a suite: ``cnn:small``.

Four conv blocks (conv 3×3 -> BatchNorm -> ReLU; 32, 32, 64, 64 channels, a 2×2 max-pool after the second and
the fourth), global average pooling, a linear classifier. Options: ``channels`` (1), ``size`` (28: the input
is channels × size × size, in [0, 1]), ``classes`` (10). Probe layers ``block1`` to ``block4``; the embedding is
the pooled 64-D feature vector. Training (``train:``): Adam on cross-entropy; ``epochs`` (5), ``batch_size``
(64), ``lr`` (1e-3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repreval.api import ImageSet, InputSpec, ModelSource, Network, ReprevalError, TrainingContext, hookimpl

if TYPE_CHECKING:
    from torch import Tensor

TRAINING_DEFAULTS = {"epochs": 5, "batch_size": 64, "lr": 1e-3}


def _positive_int(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReprevalError(f"{key} must be a positive integer, got {value!r}")
    return value


class SmallCnns(ModelSource):
    """Small classifier CNNs (4 conv blocks, global pooling, linear), trainable with cross-entropy."""

    name = "cnn"

    def model_names(self):
        return ("small",)

    def build(self, name: str, options: dict, seed: int) -> Network:
        if name != "small":
            raise ReprevalError(f"unknown CNN {name!r}", fix="use cnn:small")
        unknown = [key for key in options if key not in ("channels", "size", "classes")]
        if unknown:
            raise ReprevalError(f"unknown option {unknown[0]!r} for cnn:small", fix="use channels, size, classes")
        from collections import OrderedDict

        from torch import nn

        channels = _positive_int(options, "channels", 1)
        size = _positive_int(options, "size", 28)
        classes = _positive_int(options, "classes", 10)

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU())

        module = nn.Sequential(
            OrderedDict(
                block1=block(channels, 32),
                block2=block(32, 32),
                pool1=nn.MaxPool2d(2),
                block3=block(32, 64),
                block4=block(64, 64),
                pool2=nn.MaxPool2d(2),
                gap=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                classifier=nn.Linear(64, classes),
            )
        )
        return Network(
            module=module,
            input_spec=InputSpec(channels, size, size),
            default_layers=("block1", "block2", "block3", "block4"),
            embed=lambda x: module[:-1](x),  # everything but the classifier, read at call time
            classify=module,
            description=f"small CNN ({channels}×{size}×{size} -> {classes} classes)",
        )

    def check_training_options(self, options: dict) -> None:
        unknown = [key for key in options if key not in TRAINING_DEFAULTS]
        if unknown:
            raise ReprevalError(f"unknown training option {unknown[0]!r}", fix="use epochs, batch_size, lr")
        _positive_int(options, "epochs", 5)
        _positive_int(options, "batch_size", 64)
        lr = options.get("lr", 1e-3)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ReprevalError(f"lr must be a positive number, got {lr!r}")

    def train(
        self, network: Network, data: ImageSet, inputs: Tensor, options: dict, seed: int, context: TrainingContext
    ) -> dict:
        import time

        import torch
        import torch.nn.functional as F

        self.check_training_options(options)
        settings = TRAINING_DEFAULTS | options
        if data.labels is None or len(data.labels) != len(inputs):
            raise ReprevalError("cnn:small trains on labelled images", fix="train on a labelled dataset (e.g. MNIST)")
        module = network.module
        device = next(module.parameters()).device
        labels = data.labels.long().to(device)
        inputs = inputs.to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=float(settings["lr"]))
        generator = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        module.train()
        for epoch in range(settings["epochs"]):
            total = 0.0
            for batch in torch.randperm(len(inputs), generator=generator).split(settings["batch_size"]):
                loss = F.cross_entropy(module(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            context.progress((epoch + 1) / settings["epochs"], f"epoch {epoch + 1}: loss {total / len(inputs):.4f}")
        module.eval()
        with torch.no_grad():
            correct = sum(int((module(x).argmax(1) == y).sum()) for x, y in zip(inputs.split(1024), labels.split(1024)))
        return {
            "epochs": settings["epochs"],
            "final_loss": total / len(inputs),
            "seconds": time.perf_counter() - started,
            "train_accuracy": correct / len(inputs),
        }


@hookimpl
def register_model_sources(register):
    """Register the ``cnn`` model source."""
    register(SmallCnns)
