"""A variant split into tasks (input shards, layer groups) gives the records of a whole local run: the tasks
run here, one after the other in any order, through pickling as on a cluster, with the driver joining their
per-input values (no Ray needed; tests/test_ray*.py run the same tasks on Ray)."""

from __future__ import annotations

import pickle

import pytest
from conftest import digits_suite

from repreval.api import Executor
from repreval.plan import UnitKind, make_plan
from repreval.runner import run_suite
from repreval.runner.context import Shard
from repreval.runner.jobs import choose_parts, split_variant
from repreval.store import ResultStore
from repreval.suite import parse_suite

#: 40 held-out digits in batches of 8: 5 batches; two probe layers; a seeded method (smoothgrad's noise points
#: derive from the batch index) beside plain gradients; an embedding score (the lead task computes it)
SPEC = {
    **digits_suite(),
    "datasets": {"train": {"kind": "digits", "limit": 300}, "held": {"kind": "digits", "skip": 300, "limit": 40}},
}
SPEC["models"] = {"ae": {**SPEC["models"]["ae"], "layers": ["encoder.block1", "encoder.block2"]}}
SPEC["evaluation"] = {
    **SPEC["evaluation"],
    "batch_size": 8,
    "saliency": ["gradients", {"smoothgrad": {"samples": 2}}],
    "scores": ["noise_score", "variance_score", {"linear_probe": {"train": "train", "test": "held"}}],
}


class SplitHere(Executor):
    """Tasks of ``parts`` per variant computed in this process in the ``order`` given (task indices), each task,
    its payload and its result pickled as a cluster would; tasks in ``lost`` ((variant, part) pairs) fail as a
    dead node's would."""

    name = "split-here"

    def __init__(self, parts: int, order=reversed, lost: tuple[tuple[str, int], ...] = ()):
        self.parts, self.order, self.lost = parts, order, lost

    def run(self, job) -> None:
        job.prepare_tasks()
        job.split(workers=2, parts=self.parts)
        self.groups = list(job.groups)
        payload = pickle.loads(pickle.dumps(job.payload()))
        for index in self.order(range(len(job.groups))):
            group = job.groups[index]
            if (group.variant, group.part) in self.lost:
                job.fail(group, RuntimeError("the node running it was lost"))
                continue
            task = pickle.loads(pickle.dumps(job.task(group, 1)))
            job.accept(group, pickle.loads(pickle.dumps(task(payload))))


def _run(tmp_path, plugins, name: str, executor: Executor | None = None, spec=SPEC):
    suite = parse_suite(spec, plugins)
    suite.output = tmp_path / name
    with pytest.MonkeyPatch.context() as monkeypatch:
        if executor is not None:
            monkeypatch.setattr(plugins.executor, "create", lambda kind, options: executor)
        outcome = run_suite(suite, plugins)
    return outcome, {record.unit_id: record for record in ResultStore(suite.output).records()}


@pytest.fixture(scope="module")
def whole(tmp_path_factory, plugins):
    """The records of a local run."""
    outcome, records = _run(tmp_path_factory.mktemp("whole"), plugins, "local")
    # variants × (layers·methods·scores + top1, top5)
    assert not outcome.failures and len(records) == 2 * (2 * 2 * 2 + 2)
    return records


def _same(records, whole) -> None:
    assert set(records) == set(whole)
    for unit_id, record in whole.items():
        got = records[unit_id]
        assert got.status == "ok"
        assert got.values == record.values and got.reference_values == record.reference_values
        assert got.value == pytest.approx(record.value, rel=1e-12)
        assert got.spread == (None if record.spread is None else pytest.approx(record.spread, rel=1e-12))
        assert (got.degenerate_maps, got.embedding_signature) == (record.degenerate_maps, record.embedding_signature)


@pytest.mark.parametrize("parts", [3, 5, 10])  # 3 and 5: shards of the batches; 10: 5 shards × 2 layer groups
def test_split_variants_give_the_records_of_a_whole_run(parts, whole, tmp_path, plugins, one_thread):
    executor = SplitHere(parts)
    outcome, records = _run(tmp_path, plugins, "split", executor)
    assert not outcome.failures and outcome.computed == len(whole)
    assert len(executor.groups) == 2 * parts  # every variant split as asked
    _same(records, whole)
    pictures = sorted(p.name for p in (tmp_path / "split" / "maps").glob("*.npz"))
    assert pictures == ["ae--random.npz", "ae--trained.npz"]  # the lead task drew every layer


def test_a_lost_part_fails_its_units_only_and_the_next_run_computes_them(whole, tmp_path, plugins, one_thread):
    outcome, records = _run(tmp_path, plugins, "split", SplitHere(3, order=list, lost=(("trained", 1),)))
    failed = {unit_id for unit_id, record in records.items() if record.status == "failed"}
    attribution_trained = {
        unit.id for unit in make_plan(parse_suite(SPEC, plugins), plugins).units
        if unit.variant.label == "trained" and unit.kind is UnitKind.ATTRIBUTION
    }  # fmt: skip
    assert failed == attribution_trained  # part 2 of 3 of the trained variant held a share of each of them
    assert all("the node running it was lost" in records[unit_id].error for unit_id in failed)
    assert len(outcome.failures) == len(failed) and outcome.computed == len(whole) - len(failed)
    again, records = _run(tmp_path, plugins, "split", SplitHere(3))
    assert again.skipped == len(whole) - len(failed) and not again.failures
    _same(records, whole)


def test_sampled_components_split_equal_a_whole_run(tmp_path, plugins, one_thread):
    spec = {**SPEC, "evaluation": {**SPEC["evaluation"], "sample_components": 3, "saliency": ["gradients"]}}
    spec["models"] = {"ae": {**SPEC["models"]["ae"], "options": {"bottleneck": 8}}}
    _, whole = _run(tmp_path, plugins, "local", spec=spec)
    outcome, records = _run(tmp_path, plugins, "split", SplitHere(4), spec=spec)
    assert not outcome.failures
    _same(records, whole)
    estimated = [record for record in records.values() if "standard_error" in record.extras]
    assert estimated
    for record in estimated:
        assert record.extras == whole[record.unit_id].extras


def test_shards_cover_every_batch_once_in_order():
    for total in range(1, 12):
        for count in range(1, 8):
            covered = [index for i in range(count) for index in Shard(i, count, i == 0).batches(total)]
            assert covered == list(range(total))


def test_split_variant_shards_batches_then_layers(plugins):
    plan = make_plan(parse_suite(SPEC, plugins), plugins)
    trained = [unit for unit in plan.units if unit.variant.label == "trained"]
    assert len(split_variant(trained, 1, batches=5)) == 1
    three = split_variant(trained, 3, batches=5)
    assert [piece.shard.index for piece in three] == [0, 1, 2] and three[0].shard.lead
    probe = [unit for unit in trained if unit.kind is UnitKind.EMBEDDING]
    assert all(unit in three[0].units for unit in probe) and not any(u in three[1].units for u in probe)
    eight = split_variant(trained, 8, batches=2)  # 2 shards × 2 layer groups (only 2 layers)
    assert [(piece.shard.index, {u.layer for u in piece.units if u.kind is UnitKind.ATTRIBUTION}) for piece in eight] == [
        (0, {"encoder.block1"}), (1, {"encoder.block1"}), (0, {"encoder.block2"}), (1, {"encoder.block2"})
    ]  # fmt: skip


def test_the_automatic_split_spreads_large_variants_and_keeps_short_ones_whole():
    big_alone = choose_parts({("vit", "trained"): 400.0}, workers=2)
    assert big_alone == {("vit", "trained"): 4}  # 2 tasks per worker
    mixed = choose_parts({("vit", "trained"): 400.0, **{(f"cnn{i}", "trained"): 10.0 for i in range(8)}}, workers=4)
    assert mixed[("vit", "trained")] == 7 and all(mixed[(f"cnn{i}", "trained")] == 1 for i in range(8))
    assert set(choose_parts({(f"m{i}", "v"): 30.0 for i in range(10)}, workers=2).values()) == {1}
    assert choose_parts({("short", "v"): 15.0}, workers=8) == {("short", "v"): 1}  # below MIN_TASK_SECONDS


def test_one_worker_or_a_fixed_split_skips_the_calibration(plugins, monkeypatch, tmp_path):
    import repreval.runner.jobs as jobs

    monkeypatch.setattr(jobs, "predict", lambda *args: pytest.fail("calibrated"))
    suite = parse_suite(SPEC, plugins)
    suite.output = tmp_path
    plan = make_plan(suite, plugins)
    notes: list[str] = []
    outcome = jobs.RunOutcome(str(tmp_path))
    job = jobs.Job(plan, plugins, plan.units, ResultStore(tmp_path), outcome, None, notes.append)
    job.prepare_tasks()
    job.split(workers=1)
    assert len(job.groups) == 2 and not notes  # nothing to spread over: nothing said
    job.split(workers=4, parts=2)
    assert len(job.groups) == 4 and sum(group.units for group in job.groups) == pytest.approx(len(plan.units))
    assert notes == ["4 tasks for 2 variants (ae · trained in 2, ae · random in 2) (as asked)"]


def test_the_automatic_split_says_what_it_chose(plugins, monkeypatch, tmp_path):
    """Each variant predicted at 50 s, 4 workers: a fair share is 100 s / (4 × 2 tasks per worker) = 12.5 s, but a
    task lasts at least MIN_TASK_SECONDS (20 s): 3 tasks per variant, and the user is told."""
    import repreval.runner.jobs as jobs
    from repreval.runner.prediction import Prediction

    suite = parse_suite(SPEC, plugins)
    suite.output = tmp_path
    plan = make_plan(suite, plugins)
    predicted = Prediction(variant_seconds={"ae": 50.0})
    monkeypatch.setattr(jobs, "predict", lambda *args: predicted)
    monkeypatch.setattr(jobs, "MIN_TASK_SECONDS", 20.0)
    notes: list[str] = []
    job = jobs.Job(plan, plugins, plan.units, ResultStore(tmp_path), jobs.RunOutcome(str(tmp_path)), None, notes.append)
    job.prepare_tasks()
    job.split(workers=4)
    assert [group.parts for group in job.groups] == [3] * 6
    shares = [group.units for group in job.groups]  # 5 batches in 3 shards: 1, 2, 2; the lead has 2 more units
    assert shares == sorted(shares, reverse=True)  # the longest tasks go first
    assert len(notes) == 1 and notes[0].startswith("6 tasks for 2 variants (ae · trained in 3, ae · random in 3)")
    assert "calibrated in" in notes[0] and "for 4 workers" in notes[0]


def test_the_automatic_split_cuts_layers_only_to_fill_idle_workers(plugins, monkeypatch, tmp_path):
    """Layer groups repeat the backward pass through the later layers (a ResNet-18 split into 3 shards × 2 layer
    groups cost 242 s on one node against 136 s whole): with as many batches as workers, a long variant is cut
    into shards of its 5 batches only; with more workers than batches, into layer groups too."""
    import repreval.runner.jobs as jobs
    from repreval.runner.prediction import Prediction

    suite = parse_suite({**SPEC, "variants": ["random"]}, plugins)  # one long variant
    suite.output = tmp_path
    plan = make_plan(suite, plugins)
    monkeypatch.setattr(jobs, "predict", lambda *args: Prediction(variant_seconds={"ae": 1000.0}))
    job = jobs.Job(plan, plugins, plan.units, ResultStore(tmp_path), jobs.RunOutcome(str(tmp_path)), None)
    job.prepare_tasks()

    def layers_per_task() -> set[int]:
        pieces = [job.pieces[group] for group in job.groups]
        return {len({u.layer for u in piece.units if u.kind is UnitKind.ATTRIBUTION}) for piece in pieces}

    job.split(workers=2)  # 4 tasks wanted (2 per worker): 4 shards of the 5 batches
    assert len(job.groups) == 4 and layers_per_task() == {2}
    job.split(workers=4)  # 8 wanted, but 5 batches fill the 4 workers: 5 shards, no layer groups
    assert len(job.groups) == 5 and layers_per_task() == {2}
    job.split(workers=8)  # 8 workers, 5 batches: 5 shards × 2 layer groups
    assert len(job.groups) == 10 and layers_per_task() == {1}


def test_a_worker_with_other_versions_refuses_to_compute(plugins, tmp_path):
    """A node whose repreval, torch or timm differ from the driver's could give other numbers with exit 0: its
    tasks fail in one line naming both versions and the fix; a worker lacking a module says which to install."""
    from dataclasses import replace

    import repreval.runner.jobs as jobs
    from repreval_builtins.executors import _on_worker

    suite = parse_suite(SPEC, plugins)
    suite.output = tmp_path
    plan = make_plan(suite, plugins)
    job = jobs.Job(plan, plugins, plan.units, ResultStore(tmp_path), jobs.RunOutcome(str(tmp_path)), None)
    job.prepare_tasks()
    task = job.task(job.groups[0], 1)
    assert dict(task.versions)["repreval"] and dict(task.versions)["torch"]
    older = replace(task, versions=(("repreval", "0.0.1"), *task.versions[1:]))
    with pytest.raises(RuntimeError, match=r"has repreval \S+ \(the driver: 0\.0\.1\): install the driver's versions"):
        older(job.payload())
    missing = _on_worker(ModuleNotFoundError("No module named 'repreval'", name="repreval"))
    assert "lacks the module 'repreval': install repreval" in str(missing)
