"""Records -> leaderboards (pure data; rendering lives in :mod:`repreval.render`).

One board per metric (score × saliency × channel aggregator × embedding aggregator). Rows are model
variants ranked by the mean of their score curve over probe layers; columns are probe layers in depth
order. Each row's reference (the score at chance level, e.g. noise vs noise) is kept beside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import TYPE_CHECKING

from .groups import group_of
from .groups import members as group_members
from .store import ScoreRecord

if TYPE_CHECKING:
    from .uncertainty import Resampler, Source

#: A row whose curve mean is within this fraction of its chance level is "at chance" in a board's reading
NEAR_CHANCE = 0.1
#: (score, saliency, channel aggregator, embedding aggregator): what one board shows.
Metric = tuple[str, str | None, str | None, str | None]


@dataclass
class Cell:
    """A row's result at one probe layer: its value, spread over inputs and chance-level reference, or why
    it has none."""

    status: str  # "ok", "failed" or "missing"
    value: float | None = None  # set when the status is "ok"
    spread: float | None = None
    reference: float | None = None
    error: str | None = None
    unit: str | None = None  # the record's unit id: where the number came from
    all_zero: bool = False  # every map was exactly 0: the layer's positions never reach the embedding


@dataclass
class Row:
    """A model variant (and dataset, where a board compares several) on one board: a cell per probe layer,
    their mean and its rank."""

    model: str
    variant: str
    cells: list[Cell]
    average: float | None  # mean of the curve over the layers that have a value
    complete: bool  # every layer has a value
    reference_average: float | None
    rank: int | None = None
    dataset: str = ""  # set when the board compares several evaluation datasets (e.g. a drift sweep)
    interval: tuple[float, float] | None = None  # 95 % bootstrap interval of ``average`` (None: one value only)
    above_chance_interval: tuple[float, float] | None = None  # the same for ``above_chance``
    tied_with: list[str] = field(default_factory=list)  # names of the rows not told apart from this one at 95 %
    tied_above_chance_with: list[str] = field(default_factory=list)  # the same, reading the values minus chance
    members: list[Row] = field(default_factory=list)  # a seed group's networks, each a row of its own

    @property
    def name(self) -> str:
        """``model · variant · dataset``, without the empty parts."""
        return " · ".join(part for part in (self.model, self.variant, self.dataset) if part)

    @property
    def above_chance(self) -> float | None:
        """Curve mean minus the chance level's (the noise score's "informativeness beyond chance")."""
        if self.average is None or self.reference_average is None:
            return None
        return self.average - self.reference_average


@dataclass
class Board:
    """One metric's leaderboard: rows ranked by curve mean, columns the probe layers in depth order."""

    score: str
    saliency: str | None
    channel_aggregator: str | None
    embedding_aggregator: str | None
    higher_is_better: bool
    bound: float | None
    columns: list[str]  # probe layer per depth position
    rows: list[Row] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``score · saliency · channels=... · components=...``, without the parts that do not apply."""
        parts = [self.score] + ([self.saliency] if self.saliency is not None else [])
        if self.channel_aggregator is not None:
            parts.append(f"channels={self.channel_aggregator}")
        if self.embedding_aggregator is not None:
            parts.append(f"components={self.embedding_aggregator}")
        return " · ".join(parts)

    @property
    def has_chance(self) -> bool:
        """Whether the rows carry a chance level (attribution scores do, embedding scores do not)."""
        return any(row.reference_average is not None for row in self.rows)

    def interpretation(self) -> str:
        """One sentence on how to read the board: who leads on the raw score and who above chance, and
        whether the two readings tell the same story."""
        rows = [row for row in self.rows if row.above_chance is not None]
        if not self.has_chance or len(rows) < 2:
            return ""
        sign = 1.0 if self.higher_is_better else -1.0
        raw = max(rows, key=lambda row: sign * (row.average or 0.0))
        relative = max(rows, key=lambda row: sign * (row.above_chance or 0.0))
        if all(sign * (row.above_chance or 0.0) <= 0 for row in rows):
            return (
                "No row beats its own chance level here: real inputs get maps no more distinct than noise "
                "inputs do, so the ranking says little."
            )
        if all(abs(row.above_chance or 0.0) < NEAR_CHANCE * abs(row.reference_average or 0.0) for row in rows):
            return (
                f"Every row is within {NEAR_CHANCE:.0%} of its chance level (largest gap {relative.above_chance:+.3f}, "
                f"{relative.name}): the maps are barely more specific to real inputs than to noise, so neither "
                "ranking means much."
            )
        if raw is relative:
            return (
                f"{raw.name} leads both raw and above its chance level ({relative.above_chance:+.3f}; "
                f"next best {_runner_up(rows, relative, sign):+.3f})."
            )
        chances = [row.reference_average or 0.0 for row in rows]
        return (
            f"{raw.name} ranks first on the raw score, {relative.name} above chance "
            f"({relative.above_chance:+.3f} against {raw.above_chance:+.3f}): the chance levels differ between rows "
            f"({min(chances):.3f} to {max(chances):.3f}), so compare the gaps to chance, not the raw values."
        )


def _runner_up(rows: list[Row], best: Row, sign: float) -> float:
    others = [row.above_chance or 0.0 for row in rows if row is not best]
    return max(others, key=lambda value: sign * value)


def _metric(record: ScoreRecord) -> Metric:
    return (record.score, record.saliency, record.channel_aggregator, record.embedding_aggregator)


def build_leaderboards(records: list[ScoreRecord], *, groups: Sequence[str] = ()) -> list[Board]:
    """One :class:`Board` per metric of ``records``, sorted by metric; ranked rows first, unranked after.

    ``groups``: the seed groups the suite declared (``SuiteFacts.variant_groups``, e.g. ``random[seeds=20]``);
    on every board a group's copies fold into one row. Each row gets its 95 % bootstrap interval and the rows
    it cannot be told apart from (:mod:`repreval.uncertainty`), resampled with the records' seed."""
    from .uncertainty import Resampler

    by_metric: dict[Metric, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        by_metric[_metric(record)].append(record)
    ordered = sorted(by_metric, key=lambda metric: tuple(part or "" for part in metric))  # None first
    resampler = Resampler(min((record.seed for record in records), default=0))
    return [_board(metric, by_metric[metric], list(groups), resampler) for metric in ordered]


#: A row's records by layer index, one mapping per network (a seed group has several)
Networks = list[dict[int, ScoreRecord]]


def _board(metric: Metric, records: list[ScoreRecord], groups: list[str], resampler: Resampler) -> Board:
    depth = max(r.layer_index for r in records) + 1
    names_at: dict[int, set[str]] = defaultdict(set)
    for record in records:
        names_at[record.layer_index].add(record.layer)
    columns = [next(iter(names_at[i])) if len(names_at[i]) == 1 else f"depth {i + 1}" for i in range(depth)]
    first = records[0]
    board = Board(*metric, higher_is_better=first.higher_is_better, bound=first.bound, columns=columns)

    by_row: dict[tuple[str, str, str], dict[int, ScoreRecord]] = defaultdict(dict)
    several_datasets = len({record.dataset for record in records}) > 1
    for record in records:
        by_row[(record.model, record.variant, (record.dataset or "") if several_datasets else "")][
            record.layer_index
        ] = record
    single = [(_row(*key, layers, depth), [layers]) for key, layers in by_row.items()]
    rows = _fold(single, groups)
    board.rows = [row for row, _ in rows]
    _rank(board)
    _uncertainty(board, {id(row): networks for row, networks in single + rows}, resampler)
    return board


def _row(model: str, variant: str, dataset: str, layers: dict[int, ScoreRecord], depth: int) -> Row:
    """One network's row: its cell at each of ``depth`` layers, their mean and the chance level's."""
    cells = []
    for index in range(depth):
        found = layers.get(index)
        if found is None:
            cells.append(Cell("missing"))
        elif found.status != "ok":
            cells.append(Cell("failed", error=found.error))
        else:
            all_zero = found.degenerate_maps >= 1.0
            cells.append(
                Cell("ok", found.ok_value(), found.spread, found.reference, unit=found.unit_id, all_zero=all_zero)
            )
    return _averaged(Row(model, variant, cells, None, False, None, dataset=dataset))


def _averaged(row: Row) -> Row:
    """``row`` with its curve mean, completeness and chance level set from its cells."""
    values = [cell.value for cell in row.cells if cell.status == "ok" and cell.value is not None]
    references = [c.reference for c in row.cells if c.status == "ok" and c.reference is not None]
    row.average = fmean(values) if values else None
    row.complete = len(values) == len(row.cells)
    row.reference_average = fmean(references) if references else None
    return row


def _fold(rows: list[tuple[Row, Networks]], groups: list[str]) -> list[tuple[Row, Networks]]:
    """The rows with each seed group's copies (of one model, on one dataset) replaced by one row of the group."""
    folded: list[tuple[Row, Networks]] = []
    members: dict[tuple[str, str, str], list[tuple[Row, Networks]]] = defaultdict(list)
    for row, networks in rows:
        group = group_of(row.variant, groups)
        if group is None:
            folded.append((row, networks))
        else:
            members[(row.model, group, row.dataset)].append((row, networks))
    for (model, group, dataset), found in members.items():
        order = {label: i for i, label in enumerate(group_members(group))}
        found.sort(key=lambda pair: order[pair[0].variant])
        copies = [row for row, _ in found]
        cells = [_group_cell([row.cells[i] for row in copies]) for i in range(len(copies[0].cells))]
        row = _averaged(Row(model, group, cells, None, False, None, dataset=dataset, members=copies))
        row.complete = row.complete and all(copy.complete for copy in copies)
        folded.append((row, [layers for _, networks in found for layers in networks]))
    return folded


def _group_cell(cells: list[Cell]) -> Cell:
    """A seed group's cell at one layer: the mean over its networks' values, spread the SD between networks."""
    ok = [cell for cell in cells if cell.status == "ok" and cell.value is not None]
    if not ok:
        failed = [cell for cell in cells if cell.status == "failed"]
        return Cell("failed", error=failed[0].error) if failed else Cell("missing")
    references = [cell.reference for cell in ok if cell.reference is not None]
    return Cell(
        "ok",
        fmean(cell.value for cell in ok if cell.value is not None),
        stdev(cell.value for cell in ok if cell.value is not None) if len(ok) > 1 else None,
        fmean(references) if len(references) == len(ok) else None,
        all_zero=any(cell.all_zero for cell in ok),
    )


def _rank(board: Board) -> None:
    sign = -1.0 if board.higher_is_better else 1.0
    averaged = [(r, r.average) for r in board.rows if r.average is not None]
    # ties (accuracies are multiples of 1/n) keep the rows in name order, not in the order records were found
    scored = [r for r, value in sorted(averaged, key=lambda p: (sign * p[1], p[0].model, p[0].variant, p[0].dataset))]
    unscored = [r for r in board.rows if r.average is None]
    for rank, row in enumerate(scored, start=1):
        row.rank = rank
    board.rows = scored + unscored


def _uncertainty(board: Board, networks: dict[int, Networks], resampler: Resampler) -> None:
    """Every ranked row's intervals (raw and minus chance) and ties; a seed group's members get intervals."""
    ranked = [row for row in board.rows if row.average is not None]
    members = [member for row in ranked for member in row.members if member.average is not None]
    for rows, tie in ((ranked, True), (members, False)):
        _read(rows, networks, resampler, chance=False, tie=tie)
        _read([row for row in rows if row.above_chance is not None], networks, resampler, chance=True, tie=tie)


def _read(rows: list[Row], networks: dict[int, Networks], resampler: Resampler, *, chance: bool, tie: bool) -> None:
    """Resample ``rows`` on one reading (raw, or ``chance``: minus chance) and set their intervals (and ties)."""
    from .uncertainty import interval, ties

    if not rows:
        return
    sources = [_source(networks[id(row)], chance) for row in rows]
    points = [(row.above_chance if chance else row.average) or 0.0 for row in rows]
    samples = resampler.values(sources, [row.name for row in rows], points)
    varies = [source is not None and source.varies for source in sources]
    for row, sample, vary in zip(rows, samples, varies):
        if chance:
            row.above_chance_interval = interval(sample) if vary else None
        else:
            row.interval = interval(sample) if vary else None
    if tie:
        for row, tied in zip(rows, ties(samples, varies)):
            names = [rows[other].name for other in tied]
            if chance:
                row.tied_above_chance_with = names
            else:
                row.tied_with = names


def _source(networks: Networks, chance: bool) -> Source | None:
    """The per-input curve means (inputs × networks) of a row's networks, raw or minus chance (per input, its
    noise pair's value); None where the records lack per-input values or their counts differ."""
    import numpy as np

    from .uncertainty import Source

    columns = []
    for layers in networks:
        ok = [record for record in layers.values() if record.status == "ok"]
        if not ok:
            continue  # a network without a value is not in the row's value either
        values = [record.values for record in ok]
        if chance:
            if any(len(record.reference_values) != len(record.values) for record in ok):
                return None
            values = [[v - r for v, r in zip(record.values, record.reference_values)] for record in ok]
        if len({len(v) for v in values}) != 1:
            return None
        columns.append(np.mean(np.asarray(values, dtype=float), axis=0))
    if not columns or len({len(column) for column in columns}) != 1 or not len(columns[0]):
        return None
    dataset = next(record.dataset for layers in networks for record in layers.values())
    return Source(dataset, np.column_stack(columns))
