"""Records -> leaderboards (pure data; rendering lives in :mod:`repreval.render`).

One board per metric (score × saliency × channel aggregator × embedding aggregator). Rows are model
variants ranked by the mean of their score curve over probe layers; columns are probe layers in depth
order. Each row's reference (the score at chance level, e.g. noise vs noise) is kept beside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean

from .store import ScoreRecord

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


def build_leaderboards(records: list[ScoreRecord]) -> list[Board]:
    """One :class:`Board` per metric of ``records``, sorted by metric; ranked rows first, unranked after."""
    by_metric: dict[Metric, list[ScoreRecord]] = defaultdict(list)
    for record in records:
        by_metric[_metric(record)].append(record)
    ordered = sorted(by_metric, key=lambda metric: tuple(part or "" for part in metric))  # None first
    return [_board(metric, by_metric[metric]) for metric in ordered]


def _board(metric: Metric, records: list[ScoreRecord]) -> Board:
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
    for (model, variant, dataset), layers in by_row.items():
        cells = []
        values: list[float] = []  # of the "ok" cells, in layer order
        for index in range(depth):
            found = layers.get(index)
            if found is None:
                cells.append(Cell("missing"))
            elif found.status != "ok":
                cells.append(Cell("failed", error=found.error))
            else:
                value = found.ok_value()
                cells.append(Cell("ok", value, found.spread, found.reference, unit=found.unit_id))
                values.append(value)
        references = [c.reference for c in cells if c.status == "ok" and c.reference is not None]
        board.rows.append(
            Row(
                model,
                variant,
                cells,
                average=fmean(values) if values else None,
                complete=len(values) == depth,
                reference_average=fmean(references) if references else None,
                dataset=dataset,
            )
        )
    _rank(board)
    return board


def _rank(board: Board) -> None:
    sign = -1.0 if board.higher_is_better else 1.0
    averaged = [(r, r.average) for r in board.rows if r.average is not None]
    # ties (accuracies are multiples of 1/n) keep the rows in name order, not in the order records were found
    scored = [r for r, value in sorted(averaged, key=lambda p: (sign * p[1], p[0].model, p[0].variant, p[0].dataset))]
    unscored = [r for r in board.rows if r.average is None]
    for rank, row in enumerate(scored, start=1):
        row.rank = rank
    board.rows = scored + unscored
