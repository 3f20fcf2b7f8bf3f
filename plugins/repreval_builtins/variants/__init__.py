"""Built-in model variants: the trained network, randomly initialised copies, and the sanity-check
randomisations of Adebayo et al.: one layer at a time (independent) or top-down (cascading).

What "random" means is a choice, and a finding about "the random network" should hold for more than one
(reports check a claim across every random copy a suite lists). The ``random`` variant's options:

* ``init``: how weight layers (convolutions, linear layers, embeddings: a weight of two or more dims) are
  drawn. ``own`` (default): the model source's own initialiser (for the CIFAR ResNets kaiming-normal, for
  timm models timm's); ``pytorch``: every module's ``reset_parameters()`` (PyTorch's defaults, e.g.
  kaiming-uniform with a = sqrt(5) for convolutions); ``kaiming`` (normal, fan-in, ReLU gain), ``xavier``
  (normal) and ``orthogonal`` (gain 1), biases 0. Other parameters (position embeddings, class tokens, ...)
  keep the source's initialiser, except under ``pytorch`` where a module that can reset itself does.
* ``norm``: ``reset`` (default): normalisation layers as a fresh network has them (weight 1, bias 0, running
  statistics 0 and 1); ``keep``: random weights with the trained network's normalisation layers (affine
  parameters and running statistics), which needs the weights.
* ``seed``: the initialiser's seed (default: the model's); ``random[seed=1]``, ``random[seed=2]``, ... are
  independent random copies.
* ``seeds: K``: K copies at once, ``random[seed=0]`` ... ``random[seed=K-1]`` (other options kept), which
  claims and boards treat as one group, ``random[seeds=K]``: a finding about "random networks" is then judged
  against the spread of K networks, not against one draw (:mod:`repreval.groups`).

A layer randomisation re-initialises a layer with exactly the parameters it has in the ``random`` variant
of the same seed and ``init``, so cascading down to the first layer gives every weight layer its
``random``-variant parameters; it is not the random variant itself, as the other layers (BatchNorm) stay trained.
Only weight layers are randomised; BatchNorm layers keep their trained affine parameters and running
statistics (eval mode, so the outputs stay finite: the trained statistics merely mis-scale a randomised
layer's output). Name a BatchNorm module explicitly in ``layer:`` to re-initialise it too (weight 1, bias 0,
mean 0, var 1).
"""

from __future__ import annotations

from repreval.api import MAX_SEEDS, ModelHandle, Network, PluginOptionError, ReprevalError, Variant, hookimpl, suggest

EACH = "each"
#: How a random copy's weight layers are drawn (``init``) and what its normalisation layers hold (``norm``)
INITIALISERS = ("own", "pytorch", "kaiming", "xavier", "orthogonal")
NORMS = ("reset", "keep")


def _choice(option: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PluginOptionError(f"{option} must be one of {', '.join(choices)}; got {str(value)[:40]!r}")
    return str(value)


def normalization_layers(network: Network) -> list[str]:
    """Names of the normalisation modules (batch, instance, layer, group and RMS norms, and subclasses)."""
    from torch import nn

    kinds = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    return [name for name, module in network.module.named_modules() if name and isinstance(module, kinds)]


def initialized(model: ModelHandle, init: str, seed: int) -> Network:
    """A fresh network of ``model``'s architecture, its weight layers drawn by ``init`` (see the module doc)."""
    import torch
    from torch import nn

    network = model.untrained(seed)
    if init == "own":
        return network
    norms = set(normalization_layers(network))
    draw = {
        "kaiming": lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g),
        "xavier": lambda w, g: nn.init.xavier_normal_(w, generator=g),
        "orthogonal": lambda w, g: nn.init.orthogonal_(w, generator=g),
    }
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # reset_parameters() draws from the global generator
        for name, module in network.module.named_modules():
            if init == "pytorch":
                reset = getattr(module, "reset_parameters", None)
                if callable(reset) and any(True for _ in module.parameters(recurse=False)):
                    reset()
                continue
            weight = getattr(module, "weight", None)
            if name in norms or not isinstance(weight, nn.Parameter) or weight.dim() < 2:
                continue
            draw[init](weight, generator)
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()
    return network


class Trained(Variant):
    """The model with its weights (from a file, the hub, or a training step)."""

    name = "trained"

    def network(self, model: ModelHandle, seed: int) -> Network:
        return model.trained()


class RandomInit(Variant):
    """The same architecture, randomly initialised (seeded); options ``init``, ``norm`` and ``seed`` choose
    which random copy, ``seeds: K`` makes K copies (see the module doc)."""

    name = "random"
    needs_weights = False

    def __init__(
        self, init: str | None = None, norm: str | None = None, seed: int | None = None, seeds: int | None = None
    ):
        self.given = {key: value for key, value in (("init", init), ("norm", norm)) if value is not None}
        self.init = _choice("init", "own" if init is None else init, INITIALISERS)
        self.norm = _choice("norm", "reset" if norm is None else norm, NORMS)
        for option, value, least in (("seed", seed, 0), ("seeds", seeds, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                kind = "non-negative" if least == 0 else "positive"
                raise PluginOptionError(f"{option} must be a {kind} integer, got {str(value)[:40]!r}")
        if seeds is not None and seed is not None:
            raise PluginOptionError("give seed (one copy) or seeds (that many copies), not both")
        if seeds is not None and seeds > MAX_SEEDS:
            raise PluginOptionError(f"seeds must be at most {MAX_SEEDS}, got {seeds}")
        self.seed, self.seeds = seed, seeds
        self.needs_weights = self.norm == "keep"

    def expansions(self, network: Network) -> list[dict] | None:
        """``seeds: K`` -> the K copies ``seed: 0`` ... ``seed: K-1``, the other options kept."""
        if self.seeds is None:
            return None
        return [self.given | {"seed": seed} for seed in range(self.seeds)]

    def network(self, model: ModelHandle, seed: int) -> Network:
        if self.seeds is not None:
            raise ReprevalError(f"random[seeds={self.seeds}] must be expanded by the plan first")
        network = initialized(model, self.init, seed if self.seed is None else self.seed)
        if self.norm == "keep":
            trained = model.trained()
            randomize(network, trained, normalization_layers(trained))
        return network


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
    """Copy the own parameters and buffers of modules ``names`` from ``fresh`` into ``trained`` (returned)."""
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
    """Shared by the independent and cascading variants: option ``layer`` names one module or ``each``;
    ``init`` draws the new weights as the ``random`` variant's option of that name does."""

    option = "layer"

    def __init__(self, layer: str, init: str = "own"):
        if not isinstance(layer, str) or not layer:
            raise ReprevalError(
                f"{self.option} must be a module name or {EACH!r}, got {layer!r}", fix="see `repreval layers MODEL`"
            )
        self.layer = layer
        self.init = _choice("init", init, INITIALISERS)

    def _options(self, layer: str) -> dict:
        return {self.option: layer} | ({"init": self.init} if self.init != "own" else {})

    def expansions(self, network: Network) -> list[dict]:
        """``each`` -> one variant per weight layer (in forward order); a name is checked against the network."""
        layers = weight_layers(network)
        if self.layer == EACH:
            return [self._options(name) for name in layers]
        modules = dict(network.module.named_modules())
        if self.layer not in modules or not self.layer:
            raise ReprevalError(f"no module {self.layer!r} to randomise", fix=suggest(self.layer, layers))
        if not any(True for _ in modules[self.layer].parameters(recurse=False)):
            raise ReprevalError(
                f"module {self.layer!r} has no parameters of its own",
                fix=suggest(self.layer, layers) or "name a conv, linear or norm layer",
            )
        return [self._options(self.layer)]

    def _randomized_names(self, network: Network) -> list[str]:
        raise NotImplementedError

    def network(self, model: ModelHandle, seed: int) -> Network:
        if self.layer == EACH:
            raise ReprevalError(f"{self.name}[{self.option}=each] must be expanded by the plan first")
        trained = model.trained()
        return randomize(trained, initialized(model, self.init, seed), self._randomized_names(trained))


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

    def __init__(self, down_to: str, init: str = "own"):
        super().__init__(down_to, init)

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
