"""Python objects as a model source (``python:``) and a dataset (``tensors``), for :func:`repreval.evaluate`.

:func:`repreval.evaluate` holds a module and its inputs here under content-derived keys, registers this
module as an in-process plugin (the same hooks an installed plugin uses) and runs a suite that names them.
Nothing here is reachable from a suite file: a suite naming ``python:`` or ``tensors`` outside such a run finds
no plugin of that name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .api import DatasetSource, ImageSet, InputSpec, ModelSource, Network, hookimpl, stage_layers, trial_forward
from .errors import ReprevalError

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass
class HeldModel:
    """A module as given (its weights are the ``trained`` variant's), how to build a fresh one, its input."""

    module: nn.Module
    build: Callable[[], nn.Module] | None  # a fresh, randomly initialised module (None: reset a copy)
    spec: InputSpec


@dataclass
class HeldData:
    """Images in [0, 1], [N, C, H, W], with optional labels."""

    images: Tensor
    labels: Tensor | None


MODELS: dict[str, HeldModel] = {}
DATA: dict[str, HeldData] = {}


def unresettable(module: nn.Module) -> list[str]:
    """Parameters that no ``reset_parameters()`` re-draws: a reset copy would keep their given values."""
    return [
        f"{name}.{parameter}" if name else parameter
        for name, child in module.named_modules()
        if not callable(getattr(child, "reset_parameters", None))
        for parameter in child._parameters
    ]


def fresh_copy(held: HeldModel) -> nn.Module:
    """A randomly initialised module of the held architecture (the caller seeds torch's generator)."""
    if held.build is not None:
        return held.build()
    module = copy.deepcopy(held.module)
    for child in module.modules():
        reset = getattr(child, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


class PythonModels(ModelSource):
    """Modules handed to :func:`repreval.evaluate` (``python:KEY``); ``weights: hub`` loads the module's own."""

    name = "python"

    def build(self, name: str, options: dict, seed: int) -> Network:
        from torch import Tensor

        held = _held(MODELS, name, "model")
        module = fresh_copy(held)
        output, calls = trial_forward(module, held.spec)
        if not isinstance(output, Tensor):
            raise ReprevalError(
                f"the model returns a {type(output).__name__}, not a tensor",
                fix="pass embedding='MODULE' to take the embedding from a named module",
            )

        def embed(x: Tensor) -> Tensor:
            return module(x).flatten(1)

        return Network(
            module=module,
            input_spec=held.spec,
            default_layers=stage_layers(module, calls),
            embed=embed,
            classify=module if output.dim() == 2 else None,
            description=type(held.module).__name__,
        )

    def load_pretrained(self, network: Network, name: str, options: dict) -> None:
        network.module.load_state_dict(_held(MODELS, name, "model").module.state_dict())


class HeldTensors(DatasetSource):
    """Images handed to :func:`repreval.evaluate` (``tensors``, option ``key``)."""

    name = "tensors"

    def __init__(self, key: str):
        self.data = _held(DATA, key, "dataset")

    def size(self, target: InputSpec) -> int:
        return len(self.data.images)

    def load(self, indices, target: InputSpec) -> ImageSet:
        index = list(indices)
        labels = None if self.data.labels is None else self.data.labels[index]
        return ImageSet(self.data.images[index], labels)


def _held(store: dict, key: str, what: str):
    if key not in store:
        raise ReprevalError(
            f"no {what} {key!r} is held in this process",
            fix="python: models and tensors datasets exist only inside repreval.evaluate()",
        )
    return store[key]


@hookimpl
def register_model_sources(register):
    """The ``python`` model source."""
    register(PythonModels)


@hookimpl
def register_datasets(register):
    """The ``tensors`` dataset."""
    register(HeldTensors)
