"""Built-in model variants: the trained network, a randomly initialised copy, and the sanity-check
randomisations of Adebayo et al.: one layer at a time (independent) or top-down (cascading).

A randomised layer gets exactly the parameters it has in the ``random`` variant of the same seed
(the model source's own initialiser), so cascading down to the first layer gives every weight layer its
``random``-variant parameters; it is not the random variant itself, as the other layers (BatchNorm) stay trained.
Only weight layers (convolutions and linear layers: modules with a weight of two or more dims) are
randomised; BatchNorm layers keep their trained affine parameters and running statistics (eval mode,
so the outputs stay finite: the trained statistics merely mis-scale a randomised layer's output).
Name a BatchNorm module explicitly in ``layer:`` to re-initialise it too (weight 1, bias 0, mean 0, var 1).
"""

from __future__ import annotations

from repreval.api import ModelHandle, Network, ReprevalError, Variant, hookimpl, suggest

EACH = "each"


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


def weight_layers(network: Network) -> list[str]:
    """Names of the modules with their own weight matrix or kernel, in the order a forward pass runs them
    (through the classifier when the network has one, else up to the embedding)."""
    import torch  # here, not at the top: `repreval list` and `plugins` load this module without torch
    from torch import nn

    order: list[str] = []
    handles = []
    for name, module in network.module.named_modules():
        weight = getattr(module, "weight", None)
        if name and isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            handles.append(
                module.register_forward_hook(lambda *_, name=name: order.append(name) if name not in order else None)
            )
    try:
        with torch.no_grad():
            (network.classify or network.embed)(network.input_spec.example())
    finally:
        for handle in handles:
            handle.remove()
    return order


def randomize(trained: Network, fresh: Network, names: list[str]) -> Network:
    """Copy the own parameters and buffers of modules ``names`` from ``fresh`` into ``trained``."""
    import torch

    targets, sources = dict(trained.module.named_modules()), dict(fresh.module.named_modules())
    with torch.no_grad():
        for name in names:
            own = dict(targets[name].named_parameters(recurse=False)) | dict(targets[name].named_buffers(recurse=False))
            new = dict(sources[name].named_parameters(recurse=False)) | dict(sources[name].named_buffers(recurse=False))
            for key, tensor in own.items():
                tensor.copy_(new[key])
    return trained


class _LayerRandomization(Variant):
    """Shared by the independent and cascading variants: option ``layer`` names one module or ``each``."""

    option = "layer"

    def __init__(self, layer: str):
        if not isinstance(layer, str) or not layer:
            raise ReprevalError(
                f"{self.option} must be a module name or {EACH!r}, got {layer!r}", fix="see `repreval layers MODEL`"
            )
        self.layer = layer

    def expansions(self, network: Network) -> list[dict]:
        """``each`` -> one variant per weight layer (in forward order); a name is checked against the network."""
        layers = weight_layers(network)
        if self.layer == EACH:
            return [{self.option: name} for name in layers]
        modules = dict(network.module.named_modules())
        if self.layer not in modules or not self.layer:
            raise ReprevalError(f"no module {self.layer!r} to randomise", fix=suggest(self.layer, layers))
        if not any(True for _ in modules[self.layer].parameters(recurse=False)):
            raise ReprevalError(
                f"module {self.layer!r} has no parameters of its own",
                fix=suggest(self.layer, layers) or "name a conv, linear or norm layer",
            )
        return [{self.option: self.layer}]

    def _randomized_names(self, network: Network) -> list[str]:
        raise NotImplementedError

    def network(self, model: ModelHandle, seed: int) -> Network:
        if self.layer == EACH:
            raise ReprevalError(f"{self.name}[{self.option}=each] must be expanded by the plan first")
        trained = model.trained()
        return randomize(trained, model.untrained(seed), self._randomized_names(trained))


class IndependentRandomization(_LayerRandomization):
    """Re-initialise one layer (``layer: NAME``, or ``layer: each`` for one variant per weight layer); all
    other layers keep their trained weights."""

    name = "randomize_layer"

    def _randomized_names(self, network: Network) -> list[str]:
        return [self.layer]


class CascadingRandomization(_LayerRandomization):
    """Re-initialise every weight layer from the top (output side) down to ``down_to`` inclusive
    (``down_to: each`` gives the whole cascade, one variant per step)."""

    name = "cascade"
    option = "down_to"

    def __init__(self, down_to: str):
        super().__init__(down_to)

    def expansions(self, network: Network) -> list[dict]:
        layers = weight_layers(network)
        if self.layer != EACH and self.layer not in layers:
            raise ReprevalError(
                f"{self.layer!r} is not a weight layer, so the cascade cannot stop there",
                fix=suggest(self.layer, layers) or "name a conv or linear layer",
            )
        return super().expansions(network)

    def _randomized_names(self, network: Network) -> list[str]:
        layers = weight_layers(network)
        return layers[layers.index(self.layer) :]


@hookimpl
def register_variants(register):
    """Register ``trained``, ``random``, ``randomize_layer`` and ``cascade``, with their aliases."""
    register(Trained)
    register(RandomInit, aliases=("random_init", "untrained"))
    register(IndependentRandomization, aliases=("independent_randomization",))
    register(CascadingRandomization, aliases=("cascading_randomization",))
