"""Uncertainty on every board: each row's 95 % bootstrap interval (inputs resampled; a seed group's networks
too), the rows it cannot be told apart from, seed groups folded into one row, and the summary's sentence.
Oracles: scipy's percentile bootstrap and a hand-rolled hierarchical bootstrap, with their own random draws."""

from __future__ import annotations

import json
import re
from statistics import fmean, stdev

import numpy as np
import pytest
from rich.console import Console

from repreval.findings import FACTS_FILE, SuiteFacts
from repreval.leaderboard import build_leaderboards
from repreval.render import answer, markdown, summary_table, to_json
from repreval.store import ResultStore, ScoreRecord

LONG_METRIC = "classifier_accuracy[dataset=heldout].top1"


def record(variant, values, references=None, *, model="m", layer_index=0, dataset="d", score="noise_score"):
    values = [float(v) for v in values]
    references = None if references is None else [float(r) for r in references]
    return ScoreRecord(
        unit_id=re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}-{variant}-{layer_index}-{dataset}-{score}"),
        suite="s", model=model, model_spec="x:y", variant=variant, layer=f"l{layer_index}", layer_index=layer_index,
        saliency="gradients", channel_aggregator="abs", embedding_aggregator="mean", score=score,
        higher_is_better=True, value=fmean(values), spread=float(np.std(values)) if len(values) > 1 else None,
        reference=None if references is None else fmean(references), reference_values=references or [],
        values=values, n_inputs=len(values), dataset=dataset, seed=0,
    )  # fmt: skip


def width(interval):
    return interval[1] - interval[0]


def test_a_rows_interval_is_the_percentile_bootstrap_of_its_per_input_curve_means():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    first, second = rng.normal(0.3, 0.05, 40), rng.normal(0.5, 0.08, 40)
    chance = rng.normal(0.2, 0.03, 40)
    records = [record("trained", first, chance), record("trained", second, chance, layer_index=1)]
    (board,) = build_leaderboards(records)
    (row,) = board.rows
    per_input = (first + second) / 2  # the mean over the row's layers, input by input
    assert row.average == pytest.approx(per_input.mean())
    for reading, ours in ((per_input, row.interval), (per_input - chance, row.above_chance_interval)):
        theirs = bootstrap((reading,), np.mean, method="percentile", n_resamples=20000, rng=np.random.default_rng(7))
        low, high = theirs.confidence_interval
        assert ours[0] < reading.mean() < ours[1]
        assert abs(ours[0] - low) < 0.1 * (high - low) and abs(ours[1] - high) < 0.1 * (high - low)  # MC error ~2 %


def test_the_interval_is_seeded_by_the_records_seed():
    values = np.random.default_rng(2).normal(0, 1, 30)
    (board,) = build_leaderboards([record("a", values)])
    (again,) = build_leaderboards([record("a", values)])
    assert board.rows[0].interval == again.rows[0].interval
    other = record("a", values)
    other.seed = 5
    (reseeded,) = build_leaderboards([other])
    assert reseeded.rows[0].interval != board.rows[0].interval


def test_a_seed_group_folds_into_one_row_with_a_hierarchical_interval():
    rng = np.random.default_rng(3)
    networks, n = 6, 25
    offsets = rng.normal(0, 0.05, networks)  # networks differ from each other more than the inputs resolve
    per_network = [0.4 + offset + rng.normal(0, 0.02, n) for offset in offsets]
    records = [record(f"random[seed={k}]", values) for k, values in enumerate(per_network)]
    records.append(record("trained", rng.normal(0.6, 0.02, n)))
    (board,) = build_leaderboards(records, groups=[f"random[seeds={networks}]"])
    assert [row.name for row in board.rows] == ["m · trained", f"m · random[seeds={networks}]"]
    group = board.rows[1]
    assert group.rank == 2 and [member.variant for member in group.members] == [f"random[seed={k}]" for k in range(6)]
    means = [float(v.mean()) for v in per_network]
    assert group.cells[0].value == pytest.approx(fmean(means))
    assert group.cells[0].spread == pytest.approx(stdev(means))  # the SD between networks
    assert all(member.interval is not None and member.rank is None for member in group.members)

    # the oracle: networks drawn with replacement, then inputs, by a plain loop with its own generator
    table = np.column_stack(per_network)
    draw = np.random.default_rng(11)
    stats = [table[draw.integers(0, n, n)][:, draw.integers(0, networks, networks)].mean() for _ in range(20000)]
    low, high = np.percentile(stats, [2.5, 97.5])
    assert abs(group.interval[0] - low) < 0.1 * (high - low) and abs(group.interval[1] - high) < 0.1 * (high - low)
    inputs_only = np.percentile([table[draw.integers(0, n, n)].mean() for _ in range(4000)], [2.5, 97.5])
    assert width(group.interval) > 2 * (inputs_only[1] - inputs_only[0])  # the networks' spread counts


def test_identical_rows_are_tied_and_distant_rows_are_not():
    values = np.random.default_rng(4).normal(0.5, 0.1, 32)
    (board,) = build_leaderboards([record("a", values), record("b", values), record("c", values + 1.0)])
    rows = {row.variant: row for row in board.rows}
    assert rows["a"].tied_with == ["m · b"] and rows["b"].tied_with == ["m · a"] and rows["c"].tied_with == []
    assert [row["tied_with"] for row in json.loads(to_json([board]))[0]["rows"]] == [[], ["m · b"], ["m · a"]]


def test_rows_on_the_same_inputs_are_compared_paired():
    """Inputs vary far more than the two rows differ on any one input: paired, the difference is clear;
    the same values on two different datasets (independent resamples) cannot be told apart."""
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.2, 40)
    shifted = base + 0.02 + rng.normal(0, 0.002, 40)
    (paired,) = build_leaderboards([record("a", base), record("b", shifted)])
    assert all(row.tied_with == [] for row in paired.rows)
    assert paired.rows[0].interval[0] < paired.rows[1].interval[1]  # yet the intervals overlap
    (unpaired,) = build_leaderboards([record("a", base, dataset="x"), record("b", shifted, dataset="y")])
    assert {tuple(row.tied_with) for row in unpaired.rows} == {("m · a · x",), ("m · b · y",)}


def test_one_value_per_network_has_no_interval_unless_a_group_gives_networks():
    records = [record("trained", [0.9], score="acc"), record("other", [0.8], score="acc")]
    records += [record(f"random[seed={k}]", [0.1 + 0.01 * k], score="acc") for k in range(5)]
    (board,) = build_leaderboards(records, groups=["random[seeds=5]"])
    rows = {row.variant: row for row in board.rows}
    assert rows["trained"].interval is None and rows["other"].interval is None
    assert rows["trained"].tied_with == []  # two single values are neither tied nor told apart
    low, high = rows["random[seeds=5]"].interval
    assert 0.1 <= low < high <= 0.14
    sentence = answer(board, board.rows)
    assert (
        sentence
        == "m · trained is higher than m · random[seeds=5]; higher than m · other (one value each: no interval)."
    )


def test_json_markdown_and_the_boards_show_intervals_and_ties():
    values = np.random.default_rng(6).normal(0.5, 0.1, 20)
    records = [record("a", values), record("b", values)]
    records += [record(f"random[seed={k}]", values * 0.5 + 0.01 * k) for k in range(3)]
    boards = build_leaderboards(records, groups=["random[seeds=3]"])
    (board,) = json.loads(to_json(boards))
    rows = {row["variant"]: row for row in board["rows"]}
    assert set(rows) == {"a", "b", "random[seeds=3]"}
    assert all(
        len(row["interval"]) == 2 and row["interval"][0] <= row["average"] <= row["interval"][1]
        for row in board["rows"]
    )
    assert rows["a"]["tied_with"] == ["m · b"]
    members = rows["random[seeds=3]"]["members"]
    assert [m["variant"] for m in members] == ["random[seed=0]", "random[seed=1]", "random[seed=2]"]
    assert all(m["average"] is not None and len(m["interval"]) == 2 for m in members)

    text = markdown(boards)
    low, high = boards[0].rows[0].interval
    assert f"| 1 | m · a | {boards[0].rows[0].average:.3f} [{low:.3f}, {high:.3f}] | = 2 |" in text
    assert "| 2 | m · b |" in text and "| = 1 |" in text and "m · random[seeds=3]" in text


def summary_text(boards, width=80) -> str:
    console = Console(width=width, record=True, emoji=False)
    console.print(summary_table(boards))
    return console.export_text()


def folded(text: str) -> str:
    return "".join(text.split())


def _board(trained, random, trained_chance, random_chance, *, variant="trained_on_the_whole_training_split"):
    records = [
        record(variant, trained, trained_chance, score=LONG_METRIC),
        *(record(f"random[seed={k}]", random + 0.001 * k, random_chance, score=LONG_METRIC) for k in range(4)),
    ]
    return build_leaderboards(records, groups=["random[seeds=4]"])


def test_the_summary_names_the_better_row_raw_and_above_chance():
    rng = np.random.default_rng(8)
    noise = rng.normal(0, 0.01, 30)
    boards = _board(0.6 + noise, 0.3 + noise, np.full(30, 0.2), np.full(30, 0.2))
    text = summary_text(boards)
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    assert LONG_METRIC in folded(text) and "trained_on_the_whole_training_split" in folded(text)
    sentence = "trained_on_the_whole_training_split is higher than random[seeds=4], raw and above chance."
    assert folded(sentence) in folded(text)
    row = boards[0].rows[0]
    assert folded(f"{row.average:.3f} [{row.interval[0]:.3f}, {row.interval[1]:.3f}]") in folded(text)
    above = row.above_chance_interval
    assert folded(f"{row.above_chance:+.3f} [{above[0]:+.3f}, {above[1]:+.3f}]") in folded(text)


def test_the_summary_says_when_rows_are_tied():
    values = np.random.default_rng(9).normal(0.5, 0.1, 30)
    chance = np.full(30, 0.4)
    boards = build_leaderboards(
        [record("trained", values, chance, score=LONG_METRIC), record("random", values, chance, score=LONG_METRIC)]
    )
    assert folded("random and trained are tied at 95 %, raw and above chance.") in folded(summary_text(boards))


def test_the_summary_says_when_the_readings_disagree():
    """trained is higher raw, but its chance level is higher still: above chance, random leads."""
    rng = np.random.default_rng(10)
    noise = rng.normal(0, 0.01, 30)
    boards = _board(0.6 + noise, 0.4 + noise, np.full(30, 0.55), np.full(30, 0.2))
    text = folded(summary_text(boards))
    expected = (
        "The readings disagree: trained_on_the_whole_training_split leads raw (higher than random[seeds=4]), "
        "random[seeds=4] above chance (higher than trained_on_the_whole_training_split)."
    )
    assert folded(expected) in text and "…" not in text


def test_a_seed_groups_records_read_from_a_folder_fold_on_the_site(tmp_path):
    from repreval.render.site import publish

    folder = tmp_path / "grouped"
    store = ResultStore(folder)
    rng = np.random.default_rng(12)
    store.write(record("<b>trained</b>", rng.normal(0.6, 0.05, 16), np.full(16, 0.3), model="<i>net</i>"))
    for k in range(3):
        store.write(record(f"random[seed={k}]", rng.normal(0.4, 0.05, 16), np.full(16, 0.3), model="<i>net</i>"))
    (folder / FACTS_FILE).write_text(SuiteFacts(name="grouped", variant_groups=["random[seeds=3]"]).to_json())
    index = publish([folder], tmp_path / "site")
    html = (index.parent / "grouped" / "index.html").read_text()
    assert "random[seeds=3]" in html and "random[seed=1]" in html  # the group's row, its members in its title
    assert html.count('class="interval"') >= 4  # mean and − chance of both rows
    assert re.search(r'<td class="ties" title="[^"]*">(= \d)?</td>', html)
    assert "<b>trained</b>" not in html and "&lt;b&gt;trained&lt;/b&gt;" in html  # escaped as before
    assert "<i>net</i>" not in html
