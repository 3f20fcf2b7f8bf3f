"""The public interface for plugin authors: base classes, data types, helpers and ``hookimpl``.

A plugin imports this module and nothing else of repreval (the built-ins too; a test enforces it). It
subclasses one of the base classes, sets ``name``, and registers the class from a hook in
:mod:`repreval.hookspecs` (reference: ``docs/hooks.md``). Options from a suite arrive as keyword arguments
of ``__init__``: the host checks their names against its signature, and ``__init__`` rejects bad values by
raising :class:`PluginOptionError`. ``repreval.testing.check_plugin`` checks a plugin against this contract.

Importing this module does not import torch: it stays cheap for ``repreval list`` and ``--help``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import PluginOptionError, ReprevalError, suggest
from .files import file_kind, open_regular, shown
from .groups import MAX_SEEDS
from .hookspecs import hookimpl
from .registry import Registry
from .sizes import parse_bytes
from .tracing import stage_layers, trial_forward
from .trust import import_trusted

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "hookimpl",
    "ReprevalError",
    "PluginOptionError",
    "suggest",
    "Registry",
    "Registries",
    "TrainingContext",
    "InputSpec",
    "Layout",
    "Network",
    "ImageSet",
    "TextSet",
    "AttributionMaps",
    "ScoreValues",
    "SaliencyMethod",
    "Points",
    "Aggregator",
    "AttributionScore",
    "EmbeddingScore",
    "Explainer",
    "Explanation",
    "ModelSource",
    "ModelHandle",
    "DatasetSource",
    "Variant",
    "Executor",
    "ExecutorJob",
    "UnitGroup",
    "TaskResult",
    "normalize_maps",
    "uniform_noise",
    "component_maps",
    "trial_forward",
    "parse_bytes",
    "stage_layers",
    "file_kind",
    "open_regular",
    "shown",
    "import_trusted",
    "MAX_SEEDS",
]


# ---------------------------------------------------------------------------------------------
# Data types


@dataclass(frozen=True)
class InputSpec:
    """What a network expects: image size, normalisation, resizing (like timm's data config); or, with
    ``tokens`` > 0, token ids [N, tokens] of a text encoder (the image fields are then unused)."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "bilinear"  # one of INTERPOLATIONS
    crop_pct: float | None = None  # resize to size/crop_pct then centre-crop (timm's eval transform)
    tokens: int = 0  # > 0: the network reads this many token ids per input (a text encoder)

    INTERPOLATIONS: ClassVar[tuple[str, ...]] = ("bilinear", "bicubic", "nearest")
    CROP_PCT_RANGE: ClassVar[tuple[float, float]] = (0.25, 2.0)  # timm's range is 0.75 to 1.15
    MAX_VALUES: ClassVar[int] = 2**26  # channels × height × width (or tokens) of one input: 256 MB of float32

    def __post_init__(self) -> None:
        """Refuse, in one line, any field that would crash or mis-size the input pipeline (a model source's
        options reach it unchecked: strings, negatives, lists, a crop that would resize to gigapixels)."""
        sizes = {"channels": self.channels, "height": self.height, "width": self.width, "tokens": self.tokens}
        for name, value in sizes.items():
            minimum = 0 if name == "tokens" else 1
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
                self._refuse(name, value, f"an integer, {minimum} or more")
        if max(self.channels * self.height * self.width, self.tokens) > self.MAX_VALUES:
            self._refuse("size", self.shape, f"at most {self.MAX_VALUES:,} values per input")
        for name, values in (("mean", self.mean), ("std", self.std)):
            numbers_given = isinstance(values, (tuple, list)) and all(_finite_number(v) for v in values)
            if not numbers_given or len(values) not in (1, self.channels) or (name == "std" and min(values) <= 0):
                positive = " positive" if name == "std" else ""
                self._refuse(name, values, f"1 or {self.channels} finite{positive} numbers")
        if not isinstance(self.interpolation, str) or self.interpolation not in self.INTERPOLATIONS:
            self._refuse("interpolation", self.interpolation, "one of " + ", ".join(self.INTERPOLATIONS))
        low, high = self.CROP_PCT_RANGE
        if self.crop_pct is not None and not (_finite_number(self.crop_pct) and low <= self.crop_pct <= high):
            self._refuse("crop_pct", self.crop_pct, f"a number from {low} to {high}, or none")

    @staticmethod
    def _refuse(field_name: str, value: object, requirement: str) -> None:
        try:
            shown = repr(value)
        except ValueError:  # an integer of more than 4,300 digits
            shown = "a number too long to show"
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        option = "input_size" if field_name in ("channels", "height", "width", "size") else field_name
        raise ReprevalError(
            f"the network's input {field_name} must be {requirement}, got {shown}",
            fix=f"correct the model's '{option}' option (or its source's data config)",
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """``(channels, height, width)``, or ``(tokens,)`` for a text encoder."""
        return (self.tokens,) if self.tokens else (self.channels, self.height, self.width)

    def example(self, count: int = 1) -> Tensor:
        """``count`` all-zero inputs (token id 0 for a text encoder), to trace a network's shapes."""
        import torch

        return torch.zeros(count, *self.shape, dtype=torch.long if self.tokens else torch.float32)

    def normalize(self, images: Tensor) -> Tensor:
        """The network's mean/std normalisation of images in [0, 1] ([N, C, H, W])."""
        import torch

        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std


def _finite_number(value: object) -> bool:
    """Whether ``value`` is a finite real number (not a bool), for :class:`InputSpec`'s checks."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Layout:
    """How a network lays out the tensors its probes read (declared by the model source, never guessed):

    ``channels_first`` [B, C, h, w]; ``channels_last`` [B, h, w, C]; ``tokens`` [B, N, C] whose first
    ``prefix_tokens`` (class, register, distillation tokens) are set aside and the rest form a ``grid`` (h, w) in
    row-major order, or in the model's own ``order`` (for each grid cell in row-major order, the index of the token
    holding it: Hiera's unrolled sequences), or without a grid a 1×N row (a text encoder's sequence). A declaration
    is checked by measurement before a layer is used (``repreval.layouts``). A [B, F] vector is read as F
    channels of a 1×1 map under any layout. Modules that only
    work channels-first (Conv2d, BatchNorm2d, 2-D pooling) are read channels-first whatever the network's
    layout. ``undeclared``: the model cannot say (e.g. an activation inside a block that mixes layouts);
    probing such a layer is refused."""

    kind: str = "channels_first"
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    order: tuple[int, ...] | None = None

    KINDS: ClassVar[tuple[str, ...]] = ("channels_first", "channels_last", "tokens", "undeclared")


@dataclass
class Network:
    """A model ready for evaluation.

    ``embed`` maps a preprocessed batch to the target embedding ``z`` of shape [B, D]; it must read
    ``module`` at call time (the host hooks probe layers inside it and variants change weights in place).
    ``classify`` (optional) maps the batch to class logits.
    """

    module: nn.Module
    input_spec: InputSpec
    default_layers: tuple[str, ...]
    embed: Callable[[Tensor], Tensor]
    classify: Callable[[Tensor], Tensor] | None = None
    description: str = ""
    layout: Layout = Layout()  # how the network's probe tensors are laid out (see Layout)
    # text encoders: texts -> token ids [N, input_spec.tokens], and noise inputs like given ids (seeded)
    tokenize: Callable[[Sequence[str]], Tensor] | None = None
    noise_like: Callable[[Tensor, int], Tensor] | None = None
    # where a stage differs (hierarchical models: a token grid per stage): module name -> the layout of that
    # module and every module inside it; the longest matching name wins
    stage_layouts: dict[str, Layout] = field(default_factory=dict)


@dataclass
class TextSet:
    """Texts (a text dataset's inputs; the model's tokenizer turns them into token ids), optional labels."""

    texts: list[str]
    labels: Tensor | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ImageSet:
    """Images in [0, 1], [N, C, H, W] (or a list of [C, H, W] of varying sizes), optional labels, and optional
    ``landmarks`` [N, K, 2]: (x, y) of K named points per image in pixels of the image as given (NaN where a
    point is missing), which the host moves with the image when it fits it to a network's input."""

    images: Tensor | list[Tensor]
    labels: Tensor | None = None
    class_names: tuple[str, ...] | None = None
    landmarks: Tensor | None = None
    landmark_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class AttributionMaps:
    """Per-component maps of one probe layer, channel-aggregated, not normalised.

    Each tensor is [N, D, h, w]: N inputs, D embedding components. ``noise`` pairs every real input
    with a seeded uniform-noise input; ``noise_b`` is a second, independent noise set (benchmark).
    """

    real: Tensor | None
    noise: Tensor | None = None
    noise_b: Tensor | None = None
    #: Maps already aggregated over components, by (set name, aggregator instance): filled by the engine's
    #: single-backward path for linear aggregations, in which case the component maps may be None.
    aggregated: dict[tuple[str, Aggregator], Tensor] = field(default_factory=dict)

    def over_components(self, which: str, aggregator: Aggregator) -> Tensor:
        """The [N, h, w] maps of set ``which`` ("real", "noise", "noise_b") aggregated over components."""
        if (which, aggregator) in self.aggregated:
            return self.aggregated[(which, aggregator)]
        return aggregator(getattr(self, which), dim=1)


@dataclass
class ScoreValues:
    """One value per input; ``reference`` is the same quantity at chance level (e.g. noise vs noise)."""

    values: Tensor
    reference: Tensor | None = None
    extras: dict[str, float] = field(default_factory=dict)
    standard_error: Tensor | None = None  # per input, for estimates from sampled components


# ---------------------------------------------------------------------------------------------
# Plugin base classes


@dataclass
class Points:
    """Where a saliency method with ``uses_points`` needs gradients and how they combine (see
    :meth:`SaliencyMethod.points`): ``at`` [S, B, C, h, w], S activations per input (a path from a baseline,
    noisy copies); ``weights`` (the same shape, or one that broadcasts to it): by default the attribution is
    sum_s weights_s ⊙ gradient_s (Integrated Gradients: the quadrature weights times (a − baseline))."""

    at: Tensor
    weights: Tensor


class SaliencyMethod:
    """Attribution of embedding components to a probe layer's activation.

    ``attribute(activation, gradient)``: activation [B, C, h, w]; gradient [k, B, C, h, w], the
    gradients of k embedding components (or [k, B, C, 1, 1], their spatial mean, when
    ``gradient = "spatial_mean"``). Returns [k, B, C, h, w], or [k, B, h, w] when ``spatial`` is True
    (the method makes its own h×w map, so no channel aggregator applies). B counts rows of the batch: with
    the suite's input-level ``smoothing`` on, each input's noisy samples are rows of their own (B × samples),
    and the engine averages their attributions per input afterwards.

    A method that needs gradients away from the real activation (Integrated Gradients along a path from a
    baseline, SmoothGrad at noisy copies) sets ``uses_points`` and implements ``points`` and ``combine``
    instead of ``attribute``: the engine evaluates the gradients at every point, the points of a probe being
    extra rows of one backward sweep, and hands them to ``combine``.
    """

    name: ClassVar[str]
    spatial: ClassVar[bool] = False
    gradient: ClassVar[str] = "full"  # "full" or "spatial_mean"
    linear_in_gradient: ClassVar[bool] = False  # attribute(a, g1 + g2) == attribute(a, g1) + attribute(a, g2)
    uses_points: ClassVar[bool] = False  # gradients at ``points(...).at``, combined by ``combine``

    def attribute(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Attributions [k, B, C, h, w] ([k, B, h, w] when ``spatial``) of the k components in ``gradient``."""
        raise NotImplementedError

    def reference_inputs(self, inputs: Tensor, generator: torch.Generator) -> Tensor | None:
        """(``uses_points``) Network inputs [R, ...] (preprocessed, like ``inputs``) whose activations at the probe
        ``points`` receives as ``reference`` (e.g. an all-zero input, Captum's default baseline; seeded noise);
        None (the default): no reference."""
        return None

    def points(self, activation: Tensor, reference: Tensor | None, generator: torch.Generator) -> Points:
        """(``uses_points``) Where the method needs gradients, derived from the real ``activation``
        [B, C, h, w] and ``reference`` (the activations [R, C, h, w] of :meth:`reference_inputs`, or None), with
        the weights that combine them; any randomness drawn from ``generator`` (CPU, seeded by the run)."""
        raise NotImplementedError

    def combine(self, points: Points, gradients: Tensor) -> Tensor:
        """(``uses_points``) Attributions [k, B, C, h, w] from ``gradients`` [k, S, B, C, h, w] of k components at
        ``points.at``. Default: the weighted sum over points, sum_s weights_s ⊙ gradient_s."""
        return (points.weights * gradients).sum(dim=1)

    def finish_maps(self, maps: Tensor, input_shape: tuple[int, ...]) -> Tensor:
        """The last step on each component's h×w map [k, B, h, w] (after channel aggregation, before the
        component aggregators), e.g. normalising and upsampling it to the input's size (``input_shape``: the
        network input's, [B, C, H, W] for images). Default: the maps as they are."""
        return maps


class Aggregator:
    """Reduces one dimension of a tensor: ``aggregator(values, dim)``."""

    name: ClassVar[str]
    linear: ClassVar[bool] = False  # the signed mean: commutes with sums, enables one-backward maps
    #: For a mean of an element-wise function (``mean``: identity, ``abs``: abs), that function: the mean
    #: over a random sample of components then estimates the aggregate (``sample_components``). None: not one.
    #: Subclasses set it as a ``staticmethod``. Not annotated ClassVar: type checkers bind a ClassVar callable
    #: to the instance like a method, which a staticmethod is not.
    elementwise: Callable[[Tensor], Tensor] | None = None

    def __call__(self, values: Tensor, dim: int) -> Tensor:
        """``values`` reduced over dimension ``dim``, which is removed."""
        raise NotImplementedError


class AttributionScore:
    """A score computed from :class:`AttributionMaps`.

    ``noise_sets``: how many noise sets the score reads (0, 1 or 2). ``uses_embedding_aggregator``:
    False for scores that look at every component (the variance score).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    uses_embedding_aggregator: ClassVar[bool] = True
    #: False when the score reads only ``maps.over_components(...)``: the engine may then skip the
    #: per-component maps (one backward pass instead of D when both aggregations are linear means).
    reads_components: ClassVar[bool] = True
    noise_sets: ClassVar[int] = 0
    #: False when noise maps only feed the chance level (``reference``), not the value: a training loss
    #: built from the score then skips them.
    noise_in_value: ClassVar[bool] = True
    bounds: tuple[float, float] | None = None  # (low, high); an instance may set it from its options

    def compute(self, maps: AttributionMaps, embedding_aggregator: Aggregator | None) -> ScoreValues:
        """One value per input from ``maps``; ``embedding_aggregator`` is None when the score does not use one."""
        raise NotImplementedError

    def estimate(
        self, maps: AttributionMaps, embedding_aggregator: Aggregator | None, dim: int, seed: int
    ) -> ScoreValues:
        """The score of all ``dim`` components from maps of a random sample of them (``sample_components``),
        with ``standard_error`` set. Default: this score has no estimator."""
        raise ReprevalError(
            f"score {self.name!r} has no estimator from sampled components",
            fix="remove 'sample_components' from the evaluation, or this score",
        )


class EmbeddingScore:
    """A score of the network itself rather than of its attribution maps: it reads embeddings or logits of
    whole datasets (linear-probe accuracy, the network's own classifier accuracy).

    ``metrics``: the values one computation reports, one record each (``linear_probe.top1``, ...).
    ``datasets()``: the suite datasets it reads, checked before a run. ``compute(network, data, seed)``
    gets ``data(name) -> (ImageSet, preprocessed inputs)`` and returns ``{metric: value}``.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    metrics: ClassVar[tuple[str, ...]] = ("value",)
    bounds: ClassVar[tuple[float, float] | None] = None

    def datasets(self) -> tuple[str, ...]:
        """Names of the suite datasets :meth:`compute` reads (default: none)."""
        return ()

    def compute(self, network: Network, data: Callable[[str], tuple[ImageSet, Tensor]], seed: int) -> dict[str, float]:
        """``{metric: value}`` for each of ``metrics``; ``data(name)`` gives a dataset and its preprocessed inputs."""
        raise NotImplementedError


@dataclass
class Explanation:
    """What an explainer makes of a batch of feature maps F [B, C, h, w].

    ``reconstructions``: target layer -> F^ of that layer's shape; ``part_share``: p in (0, 1) per image, the
    share of the interpretable track in the mix; ``part_maps``: the interpretable filters' maps [B, K, h', w']
    (their peaks locate the parts); ``losses``: named terms of the training loss on this batch (tensors, for the
    plugin's own training and logs)."""

    reconstructions: dict[str, Tensor]
    part_share: Tensor
    part_maps: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)


class Explainer:
    """Learns, without labels, to re-express a frozen performer's feature map as object-part features
    (Part 2 of the method). The host extracts the performer's features, caches the trained explainer and
    computes every metric (reconstruction error, accuracy on F^, part share, location instability); the plugin
    owns the architecture and its training.

    ``build(source, targets, seed)``: an ``nn.Module`` mapping F [B, *source] to an :class:`Explanation` with a
    reconstruction for each of ``targets`` (layer -> (C, h, w)). ``fit(module, features, targets, seed,
    context)`` trains it in place on the performer's features (``targets``: layer -> features) and returns a
    log (``seconds``, ``epochs``, final losses, ...). ``version``: bump it when a change makes cached explainers
    stale. ``tracks``: for an explainer whose module mixes an ``"interpretable"`` and an ``"ordinary"`` track,
    ``("interpretable", "ordinary")``: its module then accepts ``module(F, track=NAME)``, which keeps that track's
    contribution to the mix and zeroes the other's, and the host measures what each track carries alone.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    tracks: ClassVar[tuple[str, ...]] = ()

    def build(self, source: tuple[int, int, int], targets: dict[str, tuple[int, int, int]], seed: int) -> nn.Module:
        """A fresh explainer for features of shape ``source``, reconstructing ``targets``."""
        raise NotImplementedError

    def fit(
        self, module: nn.Module, features: Tensor, targets: dict[str, Tensor], seed: int, context: TrainingContext
    ) -> dict:
        """Train ``module`` in place; ``context.on_progress(fraction, what)`` reports how far it is."""
        raise NotImplementedError


class ModelSource:
    """Builds networks for names under one prefix (``timm:resnet18`` -> source ``timm``, name ``resnet18``).

    ``build`` returns a randomly initialised network; randomness comes only from ``seed``.
    """

    name: ClassVar[str]

    def build(self, name: str, options: dict, seed: int) -> Network:
        """A randomly initialised network for model ``name`` with ``options``."""
        raise NotImplementedError

    def model_names(self) -> Sequence[str]:
        """Known names (for listings and did-you-mean); empty when open-ended."""
        return ()

    def load_pretrained(self, network: Network, name: str, options: dict) -> None:
        """Load published weights (may download). Default: unsupported."""
        raise ReprevalError(
            f"model source {self.name!r} has no published weights for {name!r}",
            fix="name a local weights file with 'weights: PATH'",
        )

    def convert_state_dict(self, state_dict: dict, network: Network) -> dict:
        """Adapt a loaded checkpoint's keys to ``network.module`` (default: unchanged)."""
        return state_dict

    def check_training_options(self, options: dict) -> None:
        """Reject bad ``train:`` options before anything runs. Default: this source cannot train."""
        raise ReprevalError(
            f"model source {self.name!r} cannot train models",
            fix="give the model 'weights: PATH' instead of 'train:'",
        )

    def train(
        self, network: Network, data: ImageSet, inputs: Tensor, options: dict, seed: int, context: TrainingContext
    ) -> dict:
        """Train ``network`` in place on preprocessed ``inputs`` (labels in ``data``); return a log.

        ``context`` gives the host's registries (e.g. scores used as training constraints) and device."""
        self.check_training_options(options)
        raise NotImplementedError


class ModelHandle:
    """What a variant can ask for: the trained network, or a fresh randomly initialised one."""

    def trained(self) -> Network:
        """The network with its weights (from a file, the hub, or a training step)."""
        raise NotImplementedError

    def untrained(self, seed: int) -> Network:
        """A fresh, randomly initialised network, seeded with ``seed``."""
        raise NotImplementedError


class Variant:
    """Derives the network to evaluate (``trained``, ``random``, layer randomisation, ...)."""

    name: ClassVar[str]
    needs_weights: bool = True  # False when only untrained networks are used (an instance may set it from options)

    def network(self, model: ModelHandle, seed: int) -> Network:
        """The network to evaluate, derived from ``model``; any randomness comes from ``seed``."""
        raise NotImplementedError

    def expansions(self, network: Network) -> list[dict] | None:
        """The full option sets of the variants this one stands for on ``network`` (e.g. one per layer for
        ``layer: each``), checked against it; raise :class:`ReprevalError` for options that do not fit. None:
        just itself."""
        return None


class DatasetSource:
    """A set of images. Options (``path=...``) arrive in ``__init__``.

    ``size(target)`` is the number of images; ``load(indices, target)`` returns those images.
    ``target`` is the input spec of the network that will read them: a loader may use it to produce
    images of that size directly (noise does), but the host fits any size and channel count.
    """

    name: ClassVar[str]

    def size(self, target: InputSpec) -> int:
        """The number of images."""
        raise NotImplementedError

    def load(self, indices: Sequence[int], target: InputSpec) -> ImageSet | TextSet:
        """The images (a text dataset: the texts) at ``indices`` (each in ``[0, size)``), in that order."""
        raise NotImplementedError

    def describe(self) -> str:
        """A one-line description of the images (default: ``name``)."""
        return self.name


# ---------------------------------------------------------------------------------------------
# Executors: where a run's units are computed


@dataclass(frozen=True)
class UnitGroup:
    """Units an executor hands out together: one model variant's pending units, built once wherever they run, or
    task ``part`` of the ``parts`` that variant was split into (:meth:`ExecutorJob.split`)."""

    model: str
    variant: str
    units: float  # how many units (a part counts its share of the units it computes with other parts)
    part: int = 0
    parts: int = 1

    def describe(self) -> str:
        """``model · variant`` (``, task 2 of 4`` for a part)."""
        return f"{self.model} · {self.variant}" + (f", task {self.part + 1} of {self.parts}" if self.parts > 1 else "")


@dataclass
class TaskResult:
    """What a task computed elsewhere returns to the driver, which alone writes the results folder: the records,
    the drawings it made (path under the results folder -> bytes), warnings, its seconds, the worker's pid and
    the node it ran on (Ray's node id, else the host name)."""

    records: list[Any]
    files: dict[str, bytes]
    warnings: list[str]
    seconds: float
    worker: int
    node: str = ""
    partials: list[Any] = field(default_factory=list)  # a part's per-input values, joined by the driver


class ExecutorJob:
    """What an executor is handed (the host implements it): the pending units in groups, and the host's ways to
    compute them here, or to make self-contained tasks that compute a group anywhere repreval is installed and
    to keep what those tasks return."""

    groups: list[UnitGroup]
    device: str  # what the suite computes on: cpu, cuda, cuda:N or auto (a task resolves it where it runs)

    def split(self, workers: int, parts: int | None = None) -> None:
        """Cut :attr:`groups` into tasks for ``workers`` parallel workers: a variant's attribution units split by
        input batches (then by layers, when it has fewer batches), the driver joining the parts' per-input values
        into the records a whole run writes. ``parts``: tasks per variant (1: whole variants); None: chosen from
        each model's calibration so that large variants spread over the workers and no task is so short that
        its start-up dominates (layers split only where the batches cannot fill the workers: each layer group
        repeats the backward pass through the later layers). Call it after :meth:`prepare_tasks` (batches are
        counted on the loaded inputs); it says what it chose through :meth:`note`."""
        raise NotImplementedError

    def compute_here(self) -> None:
        """Compute every group in this process, each record written as it is computed."""
        raise NotImplementedError

    def prepare_tasks(self) -> dict[str, str]:
        """Before tasks start: train (or find cached) every model a pending variant needs, once, here, and gather
        what tasks read (:meth:`payload`). Returns the environment variables a task needs."""
        raise NotImplementedError

    def payload(self) -> Any:
        """After :meth:`prepare_tasks`: everything a task reads besides the installed package (the preprocessed
        inputs, the trained weights), picklable. Put it in the cluster's object store once and hand it to every
        task: workers then need no file of the driver's."""
        raise NotImplementedError

    def task(self, group: UnitGroup, threads: int) -> Callable[[Any], TaskResult]:
        """A picklable callable that computes ``group`` on ``threads`` CPU threads from the :meth:`payload` it is
        called with, and returns its results."""
        raise NotImplementedError

    def accept(self, group: UnitGroup, result: TaskResult) -> None:
        """Write what a task returned (records, drawings) and count it."""
        raise NotImplementedError

    def fail(self, group: UnitGroup, exc: BaseException) -> None:
        """Record every unit of ``group`` as failed with ``exc`` (the others go on)."""
        raise NotImplementedError

    def progress(self, units: float, what: str) -> None:
        """Tell the display that ``units`` more are done."""
        raise NotImplementedError

    def note(self, text: str) -> None:
        """A line the user sees once, as the run goes (how the work was divided, where it runs)."""
        raise NotImplementedError


class Executor:
    """Where a run's pending units are computed (``executor:`` in a suite, ``--executor``): here, or as tasks
    on a cluster. Options arrive in ``__init__`` like every plugin's. ``run(job)`` must leave every unit of
    ``job`` computed or recorded as failed."""

    name: ClassVar[str]

    def run(self, job: ExecutorJob) -> None:
        """Compute ``job``'s groups (see :class:`ExecutorJob`)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# What the host hands to plugins that compose others


@dataclass
class Registries:
    """The host's registries, one per plugin kind, as loaded (``--block`` respected)."""

    saliency: Registry[SaliencyMethod]
    aggregator: Registry[Aggregator]
    score: Registry[AttributionScore | EmbeddingScore]
    model_source: Registry[ModelSource]
    dataset: Registry[DatasetSource]
    variant: Registry[Variant]
    explainer: Registry[Explainer]
    executor: Registry[Executor]

    #: Registry kind -> the base class its plugins derive from.
    BASES: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "saliency": SaliencyMethod,
        "aggregator": Aggregator,
        "score": (AttributionScore, EmbeddingScore),
        "model_source": ModelSource,
        "dataset": DatasetSource,
        "variant": Variant,
        "explainer": Explainer,
        "executor": Executor,
    }


@dataclass
class TrainingContext:
    """Given to :meth:`ModelSource.train` and :meth:`Explainer.fit`: the host's registries, the device training
    runs on, and where to report progress (``on_progress(fraction done, what)``; None: nobody listens)."""

    registries: Registries
    device: Any = "cpu"
    on_progress: Callable[[float, str], None] | None = None

    def progress(self, fraction: float, what: str) -> None:
        """Report that ``fraction`` (0 to 1) of the training is done."""
        if self.on_progress is not None:
            self.on_progress(fraction, what)


# ---------------------------------------------------------------------------------------------
# Helpers for plugin authors

#: Added to the range in :func:`normalize_maps`; a constant map becomes 0, never NaN.
NORMALIZE_EPS = 1e-12


def normalize_maps(maps: Tensor) -> Tensor:
    """``(M - min M) / (max M - min M + eps)`` over the last two dims (each 2-D map on its own)."""
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    high = flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low + NORMALIZE_EPS)).reshape(maps.shape)


def uniform_noise(shape: Sequence[int], seed: int | None = None, *, generator: Any = None) -> Tensor:
    """Images of i.i.d. U[0, 1) pixels (the noise inputs of the noise score), from ``seed`` or ``generator``."""
    import torch

    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    return torch.rand(tuple(shape), generator=generator)


def component_maps(
    network: Network,
    probe: str,
    inputs: Tensor,
    method: SaliencyMethod,
    channel_aggregator: Aggregator | None,
    **options: Any,
) -> Tensor:
    """Per-component attribution maps [B, D, h, w] of ``network`` at ``probe`` (a layer name, as in suites),
    exactly as a run computes them; ``options`` as :func:`repreval.engine.compute_maps` (``create_graph=True``
    keeps them differentiable, for scores used as training losses)."""
    from .engine import MapRequest, compute_maps
    from .engine.probe import Probe

    request = MapRequest(Probe.parse(probe), method, channel_aggregator)
    return compute_maps(network, [request], inputs, **options)[request]
