"""Built-in model variants: the trained network and a randomly initialised copy."""

from __future__ import annotations

from repreval.api import ModelHandle, Network, Variant, hookimpl


class Trained(Variant):
    """The model with its weights (from a file, the hub, or a training step)."""

    name = "trained"

    def network(self, model: ModelHandle, seed: int) -> Network:
        return model.trained()


class RandomInit(Variant):
    """The same architecture, randomly initialised by its own initialisers (seeded)."""

    name = "random"
    needs_weights = False

    def network(self, model: ModelHandle, seed: int) -> Network:
        return model.untrained(seed)


@hookimpl
def register_variants(register):
    register(Trained)
    register(RandomInit, aliases=("random_init", "untrained"))
