"""A suite as data: the typed configuration that :mod:`repreval.suite` parses from YAML.

Plain frozen-or-simple dataclasses and constants, no behaviour that needs torch, and no import from the
rest of repreval: the planner, runner and reports read these; :mod:`repreval.data`, the engine and
:mod:`repreval.analysis` hold what is done with them.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

SUITE_VERSION = 1

#: How the engine may compute maps: per-component backward rows, forward-mode directions, or its choice.
STRATEGIES = ("auto", "reverse", "forward")
#: Default memory budget for one engine call (bytes): sizes the chunks of components or directions.
DEFAULT_MEMORY_BUDGET = 2 * 1024**3

#: How a metric's per-input values are read: as they are, minus the chance level (the same score on noise
#: inputs, per input its own noise pair), or as a multiple of the chance level (its mean over inputs)
READINGS = ("raw", "minus_chance", "over_chance")
#: Which probe layers a ``greater`` claim tests.
LAYER_MODES = ("every", "curve", "deepest", "shallowest")


@dataclass(frozen=True)
class PluginChoice:
    """A plugin named in a suite, with its options; ``label`` tells configurations apart."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """``name``, or ``name[key=value,...]`` when there are options."""
        if not self.options:
            return self.name
        return f"{self.name}[" + ",".join(f"{k}={v}" for k, v in self.options) + "]"


@dataclass(frozen=True)
class Smoothing:
    """Input-level smoothing: each input's attributions are the mean of the saliency method's attributions at
    ``samples`` perturbed inputs ``x_s = t·(x + sigma·eps)`` with eps ~ N(0, I) and, if ``random_scale``,
    t ~ U(0, 1) (else t = 1), applied to the preprocessed input: e.g. a(x_s) ⊙ dz_d/da(x_s) for
    activations×gradients. Neither SmoothGrad nor Integrated Gradients at the probe layer (those are the
    ``smoothgrad`` and ``integrated_gradients`` methods). The default is the plain method."""

    samples: int = 1
    sigma: float = 0.0
    random_scale: bool = False

    @property
    def active(self) -> bool:
        """Whether this differs from the plain method (several samples, noise, or random scaling)."""
        return self.samples > 1 or self.sigma > 0 or self.random_scale


@dataclass(frozen=True)
class Subset:
    """Which images of a dataset to use: a seeded permutation, then ``[skip : skip + limit]``.

    Two subsets with the same seed and non-overlapping ranges are disjoint (train / held-out splits).
    """

    limit: int | None = None
    skip: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Drift:
    """Dataset drift of the paper's section 4.4: ``x_lambda = clip(x + lambda·eps, 0, 1)``, eps ~ N(0, I)
    drawn from ``seed`` at the network's input shape (the same eps for every lambda of one seed)."""

    strength: float = 0.0  # lambda
    seed: int = 0


@dataclass(kw_only=True)
class DatasetConfig:
    """A dataset as a suite declares it: a registered dataset kind, its options, a subset, optional drift."""

    kind: str
    options: dict = field(default_factory=dict)
    subset: Subset = Subset()
    drift: Drift | None = None
    landmarks: str | None = None  # "ink" (derived from the images), "own" (the dataset's) or a CSV/JSON file


@dataclass
class TrainingConfig:
    """A model's ``train:`` section: the suite dataset to train on and the source's training options."""

    dataset: str  # name of a dataset declared in the suite
    options: dict = field(default_factory=dict)  # epochs, batch_size, lr, ... (the source's own)


@dataclass(kw_only=True)
class ModelConfig:
    """One model of a suite."""

    id: str
    spec: str  # SOURCE:NAME
    options: dict = field(default_factory=dict)
    weights: str | None = None  # path to a local file, or "hub"
    weights_match: str = "name"  # "name" or "position" (checkpoint keys matched in order, shapes checked)
    train: TrainingConfig | None = None
    layers: tuple[str, ...] = ()  # empty: the source's default probe layers
    reconstruct: tuple[str, ...] = ()  # layers explainers reconstruct; empty: each explained layer itself
    embedding: str | None = None  # module whose output (globally pooled) is the embedding
    seed: int = 0
    group: str = ""  # replicates (the same model under several seeds) share a group; default: the id
    baseline: str | None = None  # group this one is compared with in reports (e.g. the unconstrained run)

    @property
    def source_name(self) -> str:
        """The SOURCE part of ``spec``."""
        return self.spec.partition(":")[0]

    @property
    def name(self) -> str:
        """The NAME part of ``spec``."""
        return self.spec.partition(":")[2]


@dataclass(kw_only=True)
class Evaluation:
    """The suite's ``evaluation:`` section: datasets, plugin choices, and how the engine computes the maps."""

    datasets: tuple[str, ...]  # the maps are computed on each (e.g. a drift sweep); ``dataset:`` = one
    saliency: list[PluginChoice] = field(default_factory=list)
    channel_aggregators: list[PluginChoice] = field(default_factory=lambda: [PluginChoice("abs")])
    embedding_aggregators: list[PluginChoice] = field(default_factory=lambda: [PluginChoice("mean")])
    scores: list[PluginChoice]  # the YAML may leave it out when it lists explainers
    batch_size: int = 16
    chunk_size: int | None = None  # None: sized from memory_budget
    strategy: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    smoothing: Smoothing = Smoothing()
    sample_components: int | None = None  # opt-in: estimate scores from k sampled components (with SE)
    explainers: list[PluginChoice] = field(default_factory=list)  # explainer networks, one per probe layer
    explainer_data: str | None = None  # the dataset explainers learn from


@dataclass(frozen=True)
class MetricSelector:
    """Which records make one metric. Unset fields match anything; labels match with or without options."""

    score: str
    saliency: str | None = None
    channels: str | None = None
    components: str | None = None
    layer: str | None = None
    variant: str | None = None
    model: str | None = None
    reading: str = "raw"  # one of READINGS

    KEYS = ("score", "saliency", "channels", "components", "layer", "variant", "model", "reading")

    @property
    def label(self) -> str:
        """Readable name: model · score · saliency · channels · components, ``@ layer``, the reading when not raw."""
        parts = [p for p in (self.model, self.score, self.saliency, self.channels, self.components) if p]
        reading = {"raw": "", "minus_chance": " − chance", "over_chance": " / chance"}[self.reading]
        return " · ".join(parts) + (f" @ {self.layer}" if self.layer else "") + reading


@dataclass(kw_only=True)
class Claim:
    """A finding of the paper to check against the numbers; one subclass per kind of check (``kind``, one of
    :data:`CLAIM_KINDS`), its fields the check's options."""

    kind: ClassVar[str]
    claim: str
    paper: str = ""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options of this kind of check, in the order they are declared."""
        return tuple(f.name for f in fields(cls) if f.name not in ("claim", "paper"))


@dataclass(kw_only=True)
class MetricClaim(Claim):
    """A claim about the values of one metric."""

    metric: MetricSelector


@dataclass(kw_only=True)
class GreaterClaim(MetricClaim):
    """``greater``: ``higher`` scores above (or, ``expect: same``, like) ``lower[0]`` at the ``layers`` judged.
    Each side is a variant of the metric's model, ``MODEL/VARIANT``, or a seed group (``random[seeds=20]``);
    ``test`` compares per-input values (see :mod:`repreval.comparisons`); ``margin``: the equivalence margin of
    ``expect: same`` in the units of the reading (None: 10 % of the chance level). The other ``lower`` entries
    (random copies) and ``readings`` (None: every reading the metric has) check that the verdict is robust."""

    kind: ClassVar[str] = "greater"
    higher: str
    lower: list[str]
    layers: str = "every"  # one of LAYER_MODES
    expect: str = "higher"  # or "same"
    test: str = "wilcoxon"  # one of repreval.statistics.TESTS
    readings: list[str] | None = None
    margin: float | None = None


@dataclass(kw_only=True)
class AboveClaim(MetricClaim):
    """``above``: the metric stays above ``threshold``."""

    kind: ClassVar[str] = "above"
    threshold: float


@dataclass(kw_only=True)
class BelowClaim(MetricClaim):
    """``below``: the metric stays below ``threshold``, or below the metric ``than`` of the same rows."""

    kind: ClassVar[str] = "below"
    threshold: float | None = None
    than: MetricSelector | None = None


@dataclass(kw_only=True)
class CorrelationClaim(Claim):
    """``correlation``: correlation number ``index`` of the report has the ``sign`` (positive or negative)."""

    kind: ClassVar[str] = "correlation"
    index: int = 0
    sign: str


@dataclass(kw_only=True)
class DriftClaim(Claim):
    """``drift``: the report's drift correlation has the ``sign`` (positive or negative)."""

    kind: ClassVar[str] = "drift"
    sign: str


@dataclass(kw_only=True)
class ReplicatesClaim(Claim):
    """``replicates``: each replicate group whose name ``match`` finds (a regular expression) has a mean at
    least its baseline's minus ``within`` (non-inferiority), or with ``improves`` above its baseline's mean."""

    kind: ClassVar[str] = "replicates"
    within: float = 0.0
    match: str = ""
    improves: bool = False


#: The claim of each kind of check, in the order errors list them
CLAIM_TYPES: dict[str, type[Claim]] = {
    claim.kind: claim for claim in (GreaterClaim, AboveClaim, BelowClaim, CorrelationClaim, DriftClaim, ReplicatesClaim)
}
CLAIM_KINDS = tuple(CLAIM_TYPES)


@dataclass(kw_only=True)
class ReportConfig:
    """The suite's ``report:`` section: what ``report.md`` shows beyond the leaderboards."""

    title: str = ""
    correlations: list[tuple[MetricSelector, MetricSelector]] = field(default_factory=list)
    drift: MetricSelector | None = None
    replicates: MetricSelector | None = None
    replicates_also: list[MetricSelector] = field(default_factory=list)  # extra columns of the replicates table
    curves: list[MetricSelector] | None = None  # None: every multi-layer attribution board
    claims: list[Claim] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """The suite's ``executor:`` (or ``--executor``): an executor plugin (``local``, ``ray``, ...) and its options
    (``ray``: a cluster ``address``, the resources each task asks for)."""

    kind: str = "local"
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(kw_only=True)
class Suite:
    """A parsed suite: its datasets, models, variants, evaluation and report."""

    name: str
    path: Path | None
    seed: int = 0
    output: Path
    device: str = "cpu"
    datasets: dict[str, DatasetConfig]
    models: dict[str, ModelConfig]
    variants: list[PluginChoice] = field(default_factory=lambda: [PluginChoice("trained"), PluginChoice("random")])
    evaluation: Evaluation
    description: str = ""
    raw: dict = field(default_factory=dict)  # the merged YAML as written (``${NAME}`` kept), stored next to the results
    environment: str = ""  # hash of the values the environment gave the suite's variables ("" when none)
    model_variants: dict[str, list[PluginChoice]] = field(default_factory=dict)  # per-model overrides
    report: ReportConfig = field(default_factory=ReportConfig)  # what report.md shows
    executor: ExecutorConfig = ExecutorConfig()  # where the units run (never changes a number)

    def variants_of(self, model_id: str) -> list[PluginChoice]:
        """The variants evaluated for ``model_id``: its own override, else the suite's."""
        return self.model_variants.get(model_id, self.variants)

    @property
    def where(self) -> str:
        """The prefix of error locations: the suite file, or ``suite`` for one built in memory."""
        return str(self.path) if self.path else "suite"


def defaults(config: type) -> dict[str, Any]:
    """The default of each field of the dataclass ``config`` that has one (a factory called): what the suite
    parser uses for a key the YAML leaves out, so that each default is written once, in its dataclass."""
    values: dict[str, Any] = {}
    for f in fields(config):
        if f.default is not MISSING:
            values[f.name] = f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return values
