"""Attribution units: the maps of each probe layer and saliency method, read by every aggregator and score.

Groups (units reading the same maps) that can share passes form a family whose maps come from one engine call
per batch (:func:`repreval.engine.compute_maps`: one tap pass; every layer and method from shared backward
passes, or forward mode where ``strategy`` picks it). Scores
read the maps batch by batch; a unit's record holds its per-input values."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..api import Aggregator, AttributionMaps, AttributionScore, Network, SaliencyMethod
from ..engine import MapRequest, compute_maps, compute_mean_maps
from ..engine.estimate import sample_components
from ..engine.probe import Probe
from ..errors import ReprevalError
from ..plan import Plan, Unit
from ..store import ScoreRecord
from .context import RunContext, derived_seed
from .pictures import PICTURE_INPUTS, PICTURE_NOISE, attribution_groups, is_pictured, keep_picture_maps
from .records import MemorySink, error_text, failed_record, finite, non_finite, record_of

if TYPE_CHECKING:
    from .variants import BuiltVariant

#: The input sets maps are computed on, in order: real inputs, and the two noise sets
INPUT_SETS = ("real", "noise", "noise_b")


@dataclass
class GroupWork:
    """What one group of units needs from the engine, decided once before its batches."""

    probe: Probe
    method: SaliencyMethod
    channel: Aggregator | None
    scores: dict[str, AttributionScore]  # by score label
    aggregators: dict[str, Aggregator]  # component aggregators by label
    sets: list[str]  # input sets the maps are computed on: real, noise, noise_b
    one_backward: bool  # exact shortcut: one backward of mean_d z_d instead of D
    sampled: Tensor | None = None  # opt-in estimates: the k sampled components
    dim: int | None = None  # D, when components are sampled

    @property
    def request(self) -> MapRequest:
        """The maps the group reads (the one-backward shortcut: channel means, whatever the aggregator)."""
        return MapRequest(self.probe, self.method, None if self.one_backward else self.channel)


#: Groups that one engine call serves, each with its work
Family = list[tuple[list[Unit], GroupWork]]


@dataclass
class PerInputValues:
    """Per-input values of one unit, gathered batch by batch."""

    values: list[Tensor] = field(default_factory=list)
    references: list[Tensor] = field(default_factory=list)
    errors: list[Tensor] = field(default_factory=list)


def run_groups(built: BuiltVariant, groups: list[list[Unit]]) -> None:
    """Every attribution group of one variant, dataset by dataset; then the pictures of a pictured variant."""
    plan = built.run.plan
    for dataset, grouped in groupby(groups, key=lambda group: group[0].dataset):
        assert dataset is not None  # attribution units always name their evaluation dataset
        batches = built.inputs.batch_source(built.network, dataset)
        same_dataset = list(grouped)
        _run_sweeps(built, batches, same_dataset)
        model_id, shard = built.model.config.id, built.run.shard
        if (
            dataset == plan.suite.evaluation.datasets[0]
            and is_pictured(plan, model_id, built.variant)
            and (shard is None or shard.lead)
        ):
            # a shard may hold some of the layers: the lead draws them all
            pictured = same_dataset if shard is None else attribution_groups(plan, model_id, built.variant)
            try:  # the maps of a few inputs, for the report's pictures; a failure here costs only the picture
                keep_picture_maps(plan, built.network, batches, built.variant, model_id, pictured, built.picture_maps)
            except Exception as exc:  # any failure: the numbers above are what matters
                built.run.outcome.warnings.append(
                    f"{built.model.config.id}/{built.variant.label}: no attribution pictures: {error_text(exc)}"
                )


def plan_group(plan: Plan, network: Network, batches: dict[str, Tensor], group: list[Unit]) -> GroupWork:
    """The engine work of one group: its maps, the shortcut that applies, the components it samples."""
    evaluation, first = plan.suite.evaluation, group[0]
    assert first.saliency is not None
    method = plan.saliency(first.saliency)
    channel = None
    if first.channel_aggregator is not None:
        channel = plan.aggregator(
            next(c for c in evaluation.channel_aggregators if c.label == first.channel_aggregator)
        )
    scores = {unit.score.label: plan.score(unit.score) for unit in group}
    aggregators = {c.label: plan.aggregator(c) for c in evaluation.embedding_aggregators}
    noise_sets = max(score.noise_sets for score in scores.values())
    work = GroupWork(
        Probe.parse(first.layer),
        method,
        channel,
        scores,
        aggregators,
        list(INPUT_SETS[: 1 + noise_sets]),
        _one_backward(method, channel, group, scores, aggregators),
    )
    if evaluation.sample_components is not None and not work.one_backward:
        with torch.no_grad():
            work.dim = network.embed(batches["real"][:1]).shape[1]
        if evaluation.sample_components < work.dim:
            seed = derived_seed(plan.suite.seed, f"components-{first.layer}")
            work.sampled = sample_components(work.dim, evaluation.sample_components, seed)
    return work


def _one_backward(method, channel, group: list[Unit], scores: dict, aggregators: dict) -> bool:
    """The exact shortcut: when every unit reads only the mean over components of channel-mean maps of a method
    linear in the gradient, one backward of mean_d z_d replaces the D per-component passes."""
    return (
        method.linear_in_gradient
        and not method.uses_points
        and channel is not None
        and channel.linear
        and all(
            not scores[unit.score.label].reads_components
            and unit.embedding_aggregator in aggregators
            and aggregators[unit.embedding_aggregator].linear
            for unit in group
        )
    )


def _run_sweeps(built: BuiltVariant, batches: dict[str, Tensor], groups: list[list[Unit]]) -> None:
    """Every group of one model variant and dataset, family by family. A family that fails is retried group by
    group, so one bad layer does not sink the others."""
    run = built.run
    works: Family = []
    for group in groups:
        try:
            works.append((group, plan_group(run.plan, built.network, batches, group)))
        except Exception as exc:
            run.fail(group, exc)
    for family in _families(works):
        progress = FamilyProgress(run, family)
        try:
            results = _run_family(built, batches, family, progress)
        except Exception as exc:
            if len(family) == 1:
                run.fail(family[0][0], exc)
                continue
            results = []
            for member in family:
                try:
                    progress = FamilyProgress(run, [member])
                    results += _run_family(built, batches, [member], progress)
                except Exception as single:
                    run.fail(member[0], single)
        for group, failed in results:
            run.finished(group, failed, progress.credit(group))


def _families(works: Family) -> list[Family]:
    """Groups that one engine call serves: the same path (full maps, or the one-backward mean) and the same
    components."""
    families: dict[tuple, Family] = {}
    for group, work in works:
        sampled = None if work.sampled is None else tuple(work.sampled.tolist())
        families.setdefault((work.one_backward, sampled), []).append((group, work))
    return list(families.values())


class FamilyProgress:
    """Moves the progress display while a family's maps are computed (per chunk of components), crediting
    each group its share, so a long sweep shows movement and a remaining time."""

    def __init__(self, run: RunContext, family: Family):
        self.run, self.family = run, family
        self.units = sum(len(group) for group, _ in family)
        self.done = 0.0  # fraction of the family's maps computed
        self.calls = 1

    def chunk(self, done: int, total: int, call: int) -> None:
        """``done`` of ``total`` components of engine call ``call`` (of ``self.calls``) are finished."""
        fraction = (call + done / total) / self.calls
        step, self.done = fraction - self.done, fraction
        if self.run.progress and step > 0:
            what = f"{self.family[0][0][0].describe().rsplit('/', 5)[0]}: {100 * fraction:.0f} % of the maps"
            self.run.progress(0.99 * step * self.units, what)

    def credit(self, group: list[Unit]) -> float:
        """Progress already reported for ``group``."""
        return 0.99 * self.done * len(group)


@dataclass
class _FamilyTally:
    """What a family's batches leave: each unit's values, failures, the count of all-zero maps per group, and the
    requests that forward mode left to the reverse sweep."""

    collected: dict[str, PerInputValues]
    failed: dict[str, Exception] = field(default_factory=dict)
    zero_maps: dict[int, list[int]] = field(default_factory=dict)  # id(group) -> [zero maps, maps]
    fallbacks: set[MapRequest] = field(default_factory=set)


def _run_family(
    built: BuiltVariant, batches: dict[str, Tensor], family: Family, progress: FamilyProgress
) -> list[tuple[list[Unit], list[tuple[Unit, Exception]]]]:
    """Compute the family's maps batch by batch, score every unit, write the records; return each group with
    the units whose score failed. An error in the maps propagates."""
    plan = built.run.plan
    started = time.perf_counter()
    sets = [name for name in INPUT_SETS if any(name in work.sets for _, work in family)]
    tally = _FamilyTally({unit.id: PerInputValues() for group, _ in family for unit in group})
    tally.zero_maps = {id(group): [0, 0] for group, _ in family}
    count, batch_size = batches["real"].shape[0], plan.suite.evaluation.batch_size
    per_batch = len(sets) if plan.suite.evaluation.smoothing.active else 1
    shard = built.run.shard
    indices = range(-(-count // batch_size)) if shard is None else shard.batches(-(-count // batch_size))
    progress.calls = len(indices) * per_batch
    for step, batch_index in enumerate(indices):
        rows = slice(batch_index * batch_size, min(count, (batch_index + 1) * batch_size))

        def on_chunk(done: int, total: int, call: int, first: int = step * per_batch) -> None:
            progress.chunk(done, total, first + call)

        maps = _family_maps(
            plan, built.network, family, batches, sets, batch_index, rows, on_chunk,
            on_fallback=lambda request, _operation: tally.fallbacks.add(request),
        )  # fmt: skip
        if batch_index == 0:
            _keep_for_pictures(built, family, maps)
        for group, work in family:
            _score_batch(built, group, work, maps, batch_index, tally)
    seconds = (time.perf_counter() - started) / len(family)  # the family's time, shared by its groups
    first_batch = indices[0] if indices else 0
    return [(group, _write_records(built, group, work, tally, seconds, first_batch)) for group, work in family]


def _keep_for_pictures(built: BuiltVariant, family: Family, maps: dict[str, dict[MapRequest, Tensor]]) -> None:
    """Keep the first batch's maps of the inputs the report pictures (the first real ones and a noise one), so
    :func:`keep_picture_maps` need not compute them again: maps of every component or of the sampled ones (the
    picture then averages those), without smoothing (the pictures' own setting), of a pictured variant."""
    plan, works = built.run.plan, [work for _, work in family]
    if (
        plan.suite.evaluation.smoothing.active
        or works[0].one_backward
        or "noise" not in maps
        or maps["real"][works[0].request].shape[0] < PICTURE_INPUTS
        or not is_pictured(plan, built.model.config.id, built.variant)
    ):
        return
    for work in works:
        request = work.request
        built.picture_maps[request] = torch.cat(
            [maps["real"][request][:PICTURE_INPUTS], maps["noise"][request][:PICTURE_NOISE]]
        )


def _score_batch(
    built: BuiltVariant,
    group: list[Unit],
    work: GroupWork,
    maps: dict[str, dict[MapRequest, Tensor]],
    batch_index: int,
    tally: _FamilyTally,
) -> None:
    """Let every unit of ``group`` read the batch's maps."""
    if not all(bool(torch.isfinite(maps[name][work.request]).all()) for name in work.sets):
        tally.failed.update({unit.id: non_finite(built.network) for unit in group if unit.id not in tally.failed})
        return  # normalising NaN maps would hide them behind finite scores
    attribution = _attribution(work, maps)
    real = attribution.real
    if real is None:
        real = next(iter(attribution.aggregated.values()))[:, None]
    tally.zero_maps[id(group)][0] += int((real.flatten(2).abs().amax(dim=-1) == 0).sum())
    tally.zero_maps[id(group)][1] += real.shape[0] * real.shape[1]
    for unit in group:
        if unit.id not in tally.failed:
            try:
                _score_unit(built.run.plan, work, unit, attribution, batch_index, tally.collected[unit.id])
            except Exception as exc:
                tally.failed[unit.id] = exc


def _write_records(
    built: BuiltVariant, group: list[Unit], work: GroupWork, tally: _FamilyTally, seconds: float, first_batch: int
) -> list[tuple[Unit, Exception]]:
    """Write the record of every unit of ``group`` that did not fail (a shard: hand its per-input values to the
    sink instead); return those that did."""
    zeros, total = tally.zero_maps[id(group)]
    shared = built.shared
    fields = {
        "bound": None,
        "device": str(built.device),
        **shared,
        # auto chose forward mode, but an operation has no forward-AD rule: the reverse sweep gave these maps
        "extras": shared["extras"] | ({"forward_fallback": 1.0} if work.request in tally.fallbacks else {}),
    }
    sampled = None if work.sampled is None else (len(work.sampled), work.dim)
    for unit in group:
        if unit.id in tally.failed:
            continue
        collected = tally.collected[unit.id]
        if not all(bool(torch.isfinite(part).all()) for part in collected.values + collected.references):
            tally.failed[unit.id] = non_finite(built.network)
            continue
        score = work.scores[unit.score.label]
        unit_fields = fields | {"bound": score.bounds[1] if score.bounds else None}
        unit_tally = UnitTally(unit.id, first_batch, collected, zeros, total, seconds, sampled, unit_fields)
        if built.run.shard is None:
            built.run.sink.write(unit_record(built.run.plan, unit, [unit_tally]))
        else:
            assert isinstance(built.run.sink, MemorySink)  # a shard runs as a task: the driver joins the shards
            built.run.sink.tallies.append(unit_tally)
    return [(unit, tally.failed[unit.id]) for unit in group if unit.id in tally.failed]


@dataclass
class UnitTally:
    """One unit's per-input values over a run's batches, or over a shard's (from ``first_batch`` on), with the
    all-zero map count, the seconds, the sampled components (k, D) and the record's other fields."""

    unit_id: str
    first_batch: int
    collected: PerInputValues
    zero_maps: int
    maps: int
    seconds: float
    sampled: tuple[int, int | None] | None
    fields: dict


def unit_record(plan: Plan, unit: Unit, tallies: list[UnitTally]) -> ScoreRecord:
    """The record of ``unit`` from its tallies (one from a whole run; a shard's each, joined in batch order)."""
    ordered = sorted(tallies, key=lambda tally: tally.first_batch)
    collected = PerInputValues(*(sum((getattr(t.collected, name) for t in ordered), []) for name in _COLLECTED))
    extras = {name: value for tally in ordered for name, value in tally.fields["extras"].items()}
    fields = ordered[0].fields | {"extras": extras}
    summary = _summary(collected, ordered[0].sampled)
    estimated = summary.pop("estimated")
    if not finite(summary["value"], summary["spread"]):  # finite shards whose sum overflows
        return failed_record(plan, unit, "the score is not a finite number: its per-input values overflow")
    return record_of(
        plan,
        unit,
        **summary,
        degenerate_maps=sum(t.zero_maps for t in ordered) / max(sum(t.maps for t in ordered), 1),
        seconds=round(sum(t.seconds for t in ordered), 3),
        **fields | {"extras": fields["extras"] | estimated},
    )


_COLLECTED = ("values", "references", "errors")


def _attribution(work: GroupWork, maps: dict[str, dict[MapRequest, Tensor]]) -> AttributionMaps:
    """The group's maps of one batch, from the family's."""
    if work.one_backward:
        aggregated = {
            (name, agg): maps[name][work.request]
            for name in work.sets
            for agg in work.aggregators.values()
            if agg.linear
        }
        return AttributionMaps(None, aggregated=aggregated)
    sets = {name: maps[name][work.request] for name in work.sets}
    return AttributionMaps(sets.get("real"), sets.get("noise"), sets.get("noise_b"))


def _family_maps(
    plan: Plan,
    network: Network,
    family: Family,
    batches: dict[str, Tensor],
    sets: list[str],
    batch_index: int,
    rows: slice,
    on_chunk: Callable[[int, int, int], None] | None = None,
    on_fallback: Callable[[MapRequest, str], None] | None = None,
) -> dict[str, dict[MapRequest, Tensor]]:
    """Maps of one batch for every request of the family and every input set. Without smoothing the sets go
    through the network as one batch; with it each set keeps its own seeded perturbation. ``on_fallback``: as
    :func:`repreval.engine.compute_maps`."""
    evaluation = plan.suite.evaluation
    works = [work for _, work in family]
    requests = list(dict.fromkeys(work.request for work in works))
    one_backward, sampled = works[0].one_backward, works[0].sampled

    def compute(inputs: Tensor, seed: int, call: int = 0) -> dict[MapRequest, Tensor]:
        if one_backward:
            return compute_mean_maps(network, requests, inputs, smoothing=evaluation.smoothing, seed=seed)
        return compute_maps(
            network, requests, inputs, strategy=evaluation.strategy, components=sampled,
            chunk_size=evaluation.chunk_size, memory_budget=evaluation.memory_budget,
            smoothing=evaluation.smoothing, seed=seed, on_fallback=on_fallback,
            on_chunk=None if on_chunk is None else lambda done, total: on_chunk(done, total, call),
        )  # fmt: skip

    if evaluation.smoothing.active:
        return {
            name: _floats(
                compute(batches[name][rows], derived_seed(plan.suite.seed, f"smoothing-{name}-{batch_index}"), call)
            )
            for call, name in enumerate(sets)
        }
    together = torch.cat([batches[name][rows] for name in sets])
    maps = _floats(compute(together, derived_seed(plan.suite.seed, f"points-{batch_index}")))  # points methods
    return {name: {r: value.chunk(len(sets))[i] for r, value in maps.items()} for i, name in enumerate(sets)}


def _floats(maps: dict[MapRequest, Tensor]) -> dict[MapRequest, Tensor]:
    return {request: value.float() for request, value in maps.items()}


def _score_unit(
    plan: Plan, work: GroupWork, unit: Unit, attribution: AttributionMaps, batch_index: int, values: PerInputValues
) -> None:
    """One unit's score of one batch, added to its per-input values."""
    score = work.scores[unit.score.label]
    aggregator = work.aggregators.get(unit.embedding_aggregator) if unit.embedding_aggregator else None
    if work.sampled is None:
        result = score.compute(attribution, aggregator)
    else:
        assert work.dim is not None
        result = score.estimate(
            attribution, aggregator, work.dim, derived_seed(plan.suite.seed, f"bootstrap-{batch_index}")
        )
        if result.standard_error is None:
            raise ReprevalError(
                f"score {unit.score.label!r} returned an estimate without a standard error",
                fix="set ScoreValues.standard_error in the score's estimate()",
            )
        values.errors.append(result.standard_error.detach().cpu().reshape(-1))
    values.values.append(result.values.detach().cpu().reshape(-1))
    if result.reference is not None:
        values.references.append(result.reference.detach().cpu().reshape(-1))


def _summary(collected: PerInputValues, sampled: tuple[int, int | None] | None) -> dict:
    """A unit's record fields from its per-input values; ``sampled``: the components sampled (k, D), if any."""
    per_input = torch.cat(collected.values).double()
    reference = torch.cat(collected.references).double() if collected.references else None
    estimated = {}
    if collected.errors:  # the same components for every input: errors correlate, so average the SEs
        assert sampled is not None
        estimated = {
            "standard_error": float(torch.cat(collected.errors).double().mean()),
            "sampled_components": sampled[0],
            "components": sampled[1],
        }
    return {
        "value": float(per_input.mean()),
        "spread": float(per_input.std(correction=0)),
        "reference": None if reference is None else float(reference.mean()),
        "reference_spread": None if reference is None else float(reference.std(correction=0)),
        "values": [round(float(v), 7) for v in per_input],
        "reference_values": [] if reference is None else [round(float(v), 7) for v in reference],
        "n_inputs": per_input.numel(),
        "estimated": estimated,
    }
