"""The paper's autoencoders as trainable models: ``ae:drift`` and ``ae:classifier``.

``ae:drift``: the MNIST autoencoder of the dataset-drift experiment (32-D code, MSE).
``ae:classifier``: the constrained autoencoder with a classifier on its bottleneck (options
``bottleneck``, default 10, and ``activation``, ``softplus`` or ``relu``; trained with CE + MSE).
Both read 1×28×28 images in [0, 1] (mean 0, std 1). Training options: ``epochs`` (10),
``batch_size`` (64), ``lr`` (1e-3).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from repreval.api import ImageSet, InputSpec, ModelSource, Network, ReprevalError, TrainingContext, hookimpl, suggest

if TYPE_CHECKING:
    from torch import Tensor

    from .networks import Autoencoder

__all__ = ["Autoencoders", "register_model_sources", "training_loss"]

# The networks (.networks) and their training (.training) import torch: they are imported where a model is
# built or trained, so that registering the source (`repreval list`, `repreval plugins`) needs no torch.
#: Model name -> (factory in .networks, default probe layers).
ARCHITECTURES = {
    "drift": ("drift_autoencoder", ("encoder.block1", "encoder.block2", "encoder.block3")),
    "classifier": ("constrained_autoencoder", ("encoder.block1", "encoder.block2")),
}


class Autoencoders(ModelSource):
    """The paper's autoencoders (drift: 32-D code; classifier: D-dim bottleneck + classifier), trainable."""

    name = "ae"

    def model_names(self):
        return tuple(ARCHITECTURES)

    def build(self, name: str, options: dict, seed: int) -> Network:
        if name not in ARCHITECTURES:
            raise ReprevalError(f"unknown autoencoder {name!r}", fix=suggest(name, ARCHITECTURES))
        from . import networks

        factory, default_layers = ARCHITECTURES[name]
        make = getattr(networks, factory)
        accepted = inspect.signature(make).parameters
        unknown = [key for key in options if key not in accepted]
        if unknown:
            raise ReprevalError(
                f"unknown option {unknown[0]!r} for ae:{name}",
                fix=suggest(unknown[0], accepted) if accepted else f"ae:{name} takes no options",
            )
        module: Autoencoder = make(**options)

        def embed(x: Tensor) -> Tensor:
            return module.encoder(x)

        def classify(x: Tensor) -> Tensor:
            classifier = module.classifier
            assert classifier is not None  # classify is only handed out when there is a classifier
            return classifier(module.encoder(x))

        return Network(
            module=module,
            input_spec=InputSpec(1, 28, 28, mean=(0.0,), std=(1.0,)),
            default_layers=default_layers,
            embed=embed,
            classify=classify if module.classifier is not None else None,
            description=make.__doc__.splitlines()[0],
        )

    def check_training_options(self, options: dict) -> None:
        from .training import training_settings

        training_settings(options)

    def train(
        self, network: Network, data: ImageSet, inputs: Tensor, options: dict, seed: int, context: TrainingContext
    ) -> dict:
        from .training import train_autoencoder

        if len(inputs) == 0:
            raise ReprevalError("the training dataset is empty", fix="give the training dataset some images")
        labels = None
        if network.classify is not None:
            labels = data.labels
            if labels is None:
                raise ReprevalError(
                    "this autoencoder has a classifier and needs labelled training data",
                    fix="train on a dataset with labels (e.g. digits or MNIST)",
                )
            if len(labels) != len(inputs):
                raise ReprevalError(f"{len(labels)} labels for {len(inputs)} training images")
            labels = labels.long()
        return train_autoencoder(network, inputs, labels, options, seed, context.registries)


@hookimpl
def register_model_sources(register):
    """Register the ``ae`` model source."""
    register(Autoencoders)


def __getattr__(name: str):
    """``training_loss`` and the networks stay importable from here (from .training and .networks)."""
    if name == "training_loss":
        from .training import training_loss

        return training_loss
    if name in ("Autoencoder", "constrained_autoencoder", "drift_autoencoder"):
        from . import networks

        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
