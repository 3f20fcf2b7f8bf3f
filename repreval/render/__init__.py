"""Leaderboard renderers: rich tables for the terminal, Markdown for reports, JSON for machines."""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..groups import split_label
from ..leaderboard import Board, Cell, Row

MISSING = "—"
#: Marks a cell whose maps were all exactly 0 (the layer's positions never reach the embedding)
ALL_ZERO = "∅"


#: control characters (terminal escapes, carriage returns, ...) shown as ``\x1b``; newlines and tabs kept
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), 127] if chr(code) not in "\n\t"}


#: Row colours (matplotlib's tab10, reordered so the first rows differ most); beyond them golden-angle hues
ROW_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")  # fmt: skip


def row_colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per row name (``model · variant``), hex, in the order the names first come: a caller passes
    every row of a run or a site, so a row keeps its colour on all its plots and boards."""
    return {name: _colour(index) for index, name in enumerate(dict.fromkeys(names))}


def _colour(index: int) -> str:
    if index < len(ROW_COLOURS):
        return ROW_COLOURS[index]
    red, green, blue = colorsys.hls_to_rgb(index * 0.381966 % 1.0, 0.42, 0.62)  # golden-angle hues: far apart
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def plain(text: object, style: str = "") -> Text:
    """``text`` exactly as written: never read as markup (``[/x]``, ``a[b]``) or emoji (``:x:``), and control
    characters shown escaped (a suite's ``\x1b[2J`` must not drive the terminal)."""
    return Text(str(text).translate(_CONTROLS), style=style)


def _number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def cell_text(cell: Cell) -> str:
    """A cell as ``value ±spread`` (3 decimals; `` ∅`` after it when every map was 0), ``failed``, or ``—`` when
    missing."""
    if cell.status == "failed":
        return "failed"
    if cell.status != "ok":
        return MISSING
    text = f"{cell.value:.3f}" + ("" if cell.spread is None else f" ±{cell.spread:.3f}")
    return text + (f" {ALL_ZERO}" if cell.all_zero else "")


def with_interval(
    value: float | None, interval: tuple[float, float] | None, signed: bool = False, digits: int = 3
) -> str:
    """``0.182 [0.171, 0.193]`` (``+0.012 [+0.003, +0.020]`` when ``signed``); the value alone without an
    interval, ``—`` without a value."""
    if value is None:
        return MISSING
    shape = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = shape.format(value)
    return text if interval is None else f"{text} [{shape.format(interval[0])}, {shape.format(interval[1])}]"


#: Most decimals a board's intervals are shown with
MAX_DIGITS = 6


def digits(board: Board) -> int:
    """Decimals that show a difference the size of the board's narrowest interval (3 at least): a variance score
    of 0.0092 [0.0090, 0.0094] does not read as 0.009 [0.009, 0.009]."""
    intervals = [found for row in board.rows for found in (row.interval, row.above_chance_interval) if found]
    widths = [high - low for low, high in intervals if high > low]
    if not widths:
        return 3
    return min(MAX_DIGITS, max(3, math.ceil(-math.log10(min(widths)))))


def _average_text(board: Board, row: Row) -> str:
    shown = with_interval(row.average, row.interval, digits=digits(board))
    return shown + ("" if row.complete or row.average is None else "*")


def _above_chance_text(board: Board, row: Row) -> str:
    return with_interval(row.above_chance, row.above_chance_interval, signed=True, digits=digits(board))


def ties_text(board: Board, row: Row) -> str:
    """``= 2,3``: the ranks of the rows ``row`` cannot be told apart from at 95 %; empty when there are none."""
    ranks = {other.name: other.rank for other in board.rows}
    tied = sorted(rank for name in row.tied_with if (rank := ranks.get(name)) is not None)
    return "= " + ",".join(str(rank) for rank in tied) if tied else ""


def _shows_bound(board: Board) -> bool:
    """A bound column only where it tells something (the variance score's 1/4, not a score in [0, 1])."""
    return bool(board.bound) and board.bound != 1.0


def _bound_text(board: Board, row: Row) -> str:
    if not board.bound or row.average is None:
        return MISSING
    return f"{row.average / board.bound:.2f}"


def board_legend(board: Board) -> str:
    """What a board's numbers are, in one line."""
    legend = (
        "mean: curve mean over layers [95 % bootstrap interval: inputs resampled, and a seed group's networks]; "
        "ties: ranks not told apart at 95 %; cells: mean ±std over inputs"
    )
    if any(row.members for row in board.rows):
        legend += " (a seed group's cells: mean over its networks ±SD between them)"
    if board.has_chance:
        legend += "; chance: the same score on noise inputs; − chance: mean minus chance"
    if any(not row.complete for row in board.rows):
        legend += "; * = some layers missing"
    if "(embedding)" in board.columns:  # repreval.plan.EMBEDDING (plan imports torch)
        legend += "; (embedding): the score reads the embedding itself (e.g. a linear probe on it), no probe layer"
    if any(cell.all_zero for row in board.rows for cell in row.cells):
        legend += (
            f"; {ALL_ZERO} = every map at that layer was exactly 0: its positions never reach the embedding, "
            "so the score there reads nothing about the representation"
        )
    return legend


def rich_table(board: Board) -> Table:
    """``board`` as a terminal table: rank, model, variant, curve mean with its interval, ties, chance level,
    one column per layer."""
    direction = "↑ higher is better" if board.higher_is_better else "↓ lower is better"
    table = Table(
        title=plain(f"{board.title}  ({direction})", "table.title"),
        title_justify="left",
        caption_justify="left",
        header_style="bold",
    )
    table.add_column("#", justify="right", overflow="fold")
    table.add_column("model", overflow="fold")
    table.add_column("variant", overflow="fold")
    table.add_column("mean [95 %]", justify="right", style="bold", overflow="fold")
    table.add_column("ties", overflow="fold")
    if _shows_bound(board):
        table.add_column("mean/bound", justify="right", overflow="fold")
    table.add_column("chance", justify="right", style="dim", overflow="fold")
    if board.has_chance:
        table.add_column("− chance [95 %]", justify="right", overflow="fold")
    for column in board.columns:
        table.add_column(plain(column), justify="right", overflow="fold")
    for row in board.rows:
        cells = [Text(cell_text(c), style="red" if c.status == "failed" else "") for c in row.cells]
        extra = [_bound_text(board, row)] if _shows_bound(board) else []
        table.add_row(
            str(row.rank or MISSING),
            plain(row.model),
            plain(" · ".join(p for p in (row.variant, row.dataset) if p)),
            _average_text(board, row),
            ties_text(board, row),
            *extra,
            _number(row.reference_average),
            *([_above_chance_text(board, row)] if board.has_chance else []),
            *cells,
        )
    table.caption = plain(
        "\n".join(part for part in (board.interpretation(), board_legend(board)) if part), "table.caption"
    )
    return table


#: Most model · variant rows the summary shows (the others: ``--boards``)
SUMMARY_COLUMNS = 6
#: Variants the summary shows first (a seed group of them too: ``random[seeds=20]``)
_FIRST = ("trained", "random")


def summary_rows(boards: list[Board]) -> list[str]:
    """The model · variant (· dataset) rows of ``boards`` the summary shows, in order: every row when there are
    few; else ``trained`` and ``random`` rows (and random seed groups) first, then those ranked best on the first
    board."""
    names: list[str] = []
    for board in boards:
        for row in board.rows:
            if row.name not in names:
                names.append(row.name)
    if len(names) <= SUMMARY_COLUMNS:
        return names
    first = [row.name for row in boards[0].rows] if boards else []
    chosen = [n for n in names if (split_label(n.rsplit(" · ", 1)[-1]) or ("",))[0] in _FIRST]
    chosen += [n for n in first if n not in chosen]
    return chosen[:SUMMARY_COLUMNS]


def summary_table(boards: list[Board]) -> Group:
    """The answer, one block per metric (full names, wrapped, never cut: it reads in 80 columns): each shown
    row's curve mean over layers, raw and minus its chance level, each with its 95 % interval; then one sentence
    naming the better row, or saying the rows are tied at 95 %, or that the two readings disagree."""
    shown = summary_rows(boards)
    every = {row.name for board in boards for row in board.rows}
    models = {row.model for board in boards for row in board.rows}
    one_model = len(models) == 1

    def label(row: Row) -> str:  # one model: its name is in the title, the rows name the variants
        return " · ".join(p for p in (row.variant, row.dataset) if p) if one_model else row.name

    title = "summary" + (f": {next(iter(models))}" if one_model else "")
    parts: list[RenderableType] = [plain(title, "table.title")]
    for board in boards:
        rows = [row for row in board.rows if row.name in shown]
        if rows:
            parts += [Text(""), *_summary_block(board, rows, label)]
    caption = (
        "raw: curve mean over layers; above chance: minus the same score on noise inputs; [ ]: 95 % bootstrap "
        "interval (inputs resampled, and a seed group's networks). Every board with its layers: --boards"
    )
    if len(every) > len(shown):
        caption += f" ({len(every) - len(shown)} more rows there)"
    parts += [Text(""), plain(caption, "table.caption")]
    return Group(*parts)


def _summary_block(board: Board, rows: list[Row], label: Callable[[Row], str]) -> list[RenderableType]:
    """One metric of the summary: its full name, a small table of the rows, the sentence."""
    arrow = "↑ higher is better" if board.higher_is_better else "↓ lower is better"
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("", overflow="fold")
    table.add_column("raw [95 %]", justify="right", overflow="fold")
    if board.has_chance:
        table.add_column("above chance [95 %]", justify="right", overflow="fold")
    for row in rows:
        cells: list[Text | str] = [plain(label(row)), _average_text(board, row)]
        if board.has_chance:
            cells.append(_above_chance_text(board, row))
        table.add_row(*cells)
    return [plain(f"{board.title}  ({arrow})", "bold"), table, plain(answer(board, rows, label))]


@dataclass
class _Standing:
    """Where the rows stand on one reading: the leader, and every other row beaten, tied with it at 95 %, or
    behind without an interval on either side."""

    leader: Row
    beaten: list[Row]
    tied: list[Row]
    unsure: list[Row]

    def same_as(self, other: _Standing) -> bool:
        return [self.leader, self.beaten, self.tied, self.unsure] == [
            other.leader,
            other.beaten,
            other.tied,
            other.unsure,
        ]

    @property
    def all_tied(self) -> bool:
        return not self.beaten and not self.unsure


def _standing(board: Board, rows: list[Row], chance: bool) -> _Standing:
    sign = 1.0 if board.higher_is_better else -1.0

    def value(row: Row) -> float:
        return sign * ((row.above_chance if chance else row.average) or 0.0)

    leader = max(rows, key=value)  # the first of equals: rank order
    tied_names = leader.tied_above_chance_with if chance else leader.tied_with
    without = (leader.above_chance_interval if chance else leader.interval) is None
    standing = _Standing(leader, [], [], [])
    for row in rows:
        if row is leader:
            continue
        if row.name in tied_names:
            standing.tied.append(row)
        elif without and (row.above_chance_interval if chance else row.interval) is None:
            standing.unsure.append(row)
        else:
            standing.beaten.append(row)
    return standing


def _names(rows: list[Row], label: Callable[[Row], str]) -> str:
    names = [label(row) for row in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _clause(standing: _Standing, comparative: str, label: Callable[[Row], str]) -> str:
    """``higher than X; tied at 95 % with Y``: how the leader stands against the others."""
    parts = []
    if standing.beaten:
        parts.append(f"{comparative} than {_names(standing.beaten, label)}")
    if standing.tied:
        parts.append(f"tied at 95 % with {_names(standing.tied, label)}")
    if standing.unsure:
        parts.append(f"{comparative} than {_names(standing.unsure, label)} (one value each: no interval)")
    return "; ".join(parts)


def answer(board: Board, rows: list[Row], label: Callable[[Row], str] = lambda row: row.name) -> str:
    """One sentence on ``rows`` of ``board``: which is better (raw and above chance), or that they are tied at
    95 %, or that the raw and minus-chance readings disagree (which leads in which); empty for fewer than two
    rows with a value."""
    rows = [row for row in rows if row.average is not None]
    if len(rows) < 2:
        return ""
    comparative = "higher" if board.higher_is_better else "lower (better)"
    raw = _standing(board, rows, chance=False)
    relative = [row for row in rows if row.above_chance is not None]
    if not board.has_chance or len(relative) < 2:
        if raw.all_tied:
            return f"{_names(rows, label)} are tied at 95 %."
        return f"{label(raw.leader)} is {_clause(raw, comparative, label)}."
    chance = _standing(board, relative, chance=True)
    if raw.all_tied and chance.all_tied:
        return f"{_names(rows, label)} are tied at 95 %, raw and above chance."
    if raw.same_as(chance):
        return f"{label(raw.leader)} is {_clause(raw, comparative, label)}, raw and above chance."
    if raw.leader is chance.leader:
        return (
            f"{label(raw.leader)} leads, but is not ahead of every row in both readings: raw, it is "
            f"{_clause(raw, comparative, label)}; above chance, {_clause(chance, comparative, label)}."
        )
    return (
        f"The readings disagree: {label(raw.leader)} leads raw ({_clause(raw, comparative, label)}), "
        f"{label(chance.leader)} above chance ({_clause(chance, comparative, label)})."
    )


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.3f}"


def markdown(boards: list[Board], title: str = "repreval leaderboard") -> str:
    """``boards`` as one Markdown document: a heading, a legend and a table per board."""
    lines = [f"# {title}", ""]
    for board in boards:
        direction = "higher is better" if board.higher_is_better else "lower is better"
        lines += [f"## {board.title}", "", f"*{direction}*; {board_legend(board)}", ""]
        if board.interpretation():
            lines += [board.interpretation(), ""]
        ranked = [row for row in board.rows if row.rank is not None]
        if 1 < len(ranked) <= SUMMARY_COLUMNS:
            lines += [f"**In short**: {answer(board, ranked)}", ""]
        header = (
            ["#", "model · variant", "mean [95 %]", "ties"]
            + (["mean/bound"] if _shows_bound(board) else [])
            + ["chance"]
            + (["− chance [95 %]"] if board.has_chance else [])
            + board.columns
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if i in (1, 3) else "---:" for i in range(len(header))) + "|")
        for row in board.rows:
            extra = [_bound_text(board, row)] if _shows_bound(board) else []
            cells = [str(row.rank or MISSING), row.name, _average_text(board, row), ties_text(board, row), *extra]
            cells.append(_number(row.reference_average))
            cells += [_above_chance_text(board, row)] if board.has_chance else []
            lines.append("| " + " | ".join(cells + [cell_text(c) for c in row.cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def to_json(boards: list[Board]) -> str:
    """``boards`` as indented JSON: each board's fields plus its ``title``; each row with its ``interval``
    (``[low, high]`` or null), ``tied_with`` (row names) and, for a seed group, its ``members`` (rows of their own)."""
    return json.dumps([asdict(board) | {"title": board.title} for board in boards], indent=1)
