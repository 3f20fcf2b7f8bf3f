"""Leaderboard renderers: rich tables for the terminal, Markdown for reports, JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.table import Table
from rich.text import Text

from ..leaderboard import Board, Cell, Row

MISSING = "—"


#: control characters (terminal escapes, carriage returns, ...) shown as ``\x1b``; newlines and tabs kept
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(32), 127] if chr(code) not in "\n\t"}


def plain(text: object, style: str = "") -> Text:
    """``text`` exactly as written: never read as markup (``[/x]``, ``a[b]``) or emoji (``:x:``), and control
    characters shown escaped (a suite's ``\x1b[2J`` must not drive the terminal)."""
    return Text(str(text).translate(_CONTROLS), style=style)


def _number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def cell_text(cell: Cell) -> str:
    """A cell as ``value ±spread`` (3 decimals), ``failed``, or ``—`` when missing."""
    if cell.status == "failed":
        return "failed"
    if cell.status != "ok":
        return MISSING
    return f"{cell.value:.3f}" + ("" if cell.spread is None else f" ±{cell.spread:.3f}")


def _average_text(row: Row) -> str:
    return _number(row.average) + ("" if row.complete or row.average is None else "*")


def _shows_bound(board: Board) -> bool:
    """A bound column only where it tells something (the variance score's 1/4, not a score in [0, 1])."""
    return bool(board.bound) and board.bound != 1.0


def _bound_text(board: Board, row: Row) -> str:
    if not board.bound or row.average is None:
        return MISSING
    return f"{row.average / board.bound:.2f}"


def rich_table(board: Board) -> Table:
    """``board`` as a terminal table: rank, model, variant, curve mean, chance level, one column per layer."""
    direction = "↑ higher is better" if board.higher_is_better else "↓ lower is better"
    table = Table(
        title=plain(f"{board.title}  ({direction})", "table.title"),
        title_justify="left",
        caption_justify="left",
        header_style="bold",
    )
    table.add_column("#", justify="right")
    table.add_column("model")
    table.add_column("variant")
    table.add_column("mean", justify="right", style="bold")
    if _shows_bound(board):
        table.add_column("mean/bound", justify="right")
    table.add_column("chance", justify="right", style="dim")
    if board.has_chance:
        table.add_column("− chance", justify="right")
    for column in board.columns:
        table.add_column(plain(column), justify="right", overflow="fold")
    for row in board.rows:
        cells = [Text(cell_text(c), style="red" if c.status == "failed" else "") for c in row.cells]
        extra = [_bound_text(board, row)] if _shows_bound(board) else []
        table.add_row(
            str(row.rank or MISSING),
            plain(row.model),
            plain(" · ".join(p for p in (row.variant, row.dataset) if p)),
            _average_text(row),
            *extra,
            _number(row.reference_average),
            *([_signed(row.above_chance)] if board.has_chance else []),
            *cells,
        )
    legend = "cells: mean ±std over inputs; chance: the same score on noise inputs; − chance: mean minus chance"
    if any(not row.complete for row in board.rows):
        legend += "; * = some layers missing"
    table.caption = plain("\n".join(part for part in (board.interpretation(), legend) if part), "table.caption")
    return table


#: Most model · variant columns the summary shows (the others: ``--boards``)
SUMMARY_COLUMNS = 6


def summary_rows(boards: list[Board]) -> list[str]:
    """The model · variant (· dataset) rows of ``boards`` the summary shows, in order: every row when there are
    few; else ``trained`` and ``random`` rows first, then those ranked best on the first board."""
    names: list[str] = []
    for board in boards:
        for row in board.rows:
            if row.name not in names:
                names.append(row.name)
    if len(names) <= SUMMARY_COLUMNS:
        return names
    first = [row.name for row in boards[0].rows] if boards else []
    chosen = [n for n in names if n.rsplit(" · ", 1)[-1] in ("trained", "random")]
    chosen += [n for n in first if n not in chosen]
    return chosen[:SUMMARY_COLUMNS]


def summary_table(boards: list[Board]) -> Table:
    """One compact table: a line per metric (score · saliency · aggregation), a column per model · variant,
    each cell the curve mean over layers minus its chance level where the metric has one (the honest reading:
    a raw noise score says little when chance levels differ), else the value; the best cell of a line bold."""
    shown = summary_rows(boards)
    every = {row.name for board in boards for row in board.rows}
    models = {row.model for board in boards for row in board.rows}
    title = "summary" + (f": {next(iter(models))}" if len(models) == 1 else "")
    table = Table(title=plain(title, "table.title"), title_justify="left", caption_justify="left", header_style="bold")
    table.add_column("metric (↑ higher / ↓ lower is better)", ratio=2)
    for name in shown:  # one model: its name is in the title, the columns name the variants
        table.add_column(plain(name.split(" · ", 1)[1] if len(models) == 1 else name), justify="right", ratio=1)
    for board in boards:
        rows = {row.name: row for row in board.rows}
        values = {
            name: (row.above_chance if board.has_chance else row.average) for name, row in rows.items() if name in shown
        }
        sign = 1.0 if board.higher_is_better else -1.0
        known = [v for v in values.values() if v is not None]
        best = max(known, key=lambda v: sign * v) if len(known) > 1 else None
        cells = []
        for name in shown:
            value = values.get(name)
            text = MISSING if value is None else (_signed(value) if board.has_chance else f"{value:.3f}")
            cells.append(Text(text, style="bold" if value is not None and value == best else ""))
        arrow = "↑" if board.higher_is_better else "↓"
        label = f"{board.title} {arrow}" + (" (− chance)" if board.has_chance else "")
        table.add_row(plain(label), *cells)
    caption = "curve mean over layers; − chance: minus the same score on noise inputs. Every board: --boards"
    if len(every) > len(shown):
        caption += f"; {len(every) - len(shown)} more rows there"
    table.caption = caption
    return table


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.3f}"


def markdown(boards: list[Board], title: str = "repreval leaderboard") -> str:
    """``boards`` as one Markdown document: a heading, a legend and a table per board."""
    lines = [f"# {title}", ""]
    for board in boards:
        direction = "higher is better" if board.higher_is_better else "lower is better"
        lines += [
            f"## {board.title}",
            "",
            f"*{direction}*; cells: mean ±std over inputs; chance: the score on noise inputs"
            + ("; − chance: mean minus chance" if board.has_chance else ""),
            "",
        ]
        if board.interpretation():
            lines += [board.interpretation(), ""]
        header = (
            ["#", "model · variant", "mean"]
            + (["mean/bound"] if _shows_bound(board) else [])
            + ["chance"]
            + (["− chance"] if board.has_chance else [])
            + board.columns
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---:" if i != 1 else "---" for i in range(len(header))) + "|")
        for row in board.rows:
            extra = [_bound_text(board, row)] if _shows_bound(board) else []
            cells = [str(row.rank or MISSING), row.name, _average_text(row), *extra, _number(row.reference_average)]
            cells += [_signed(row.above_chance)] if board.has_chance else []
            lines.append("| " + " | ".join(cells + [cell_text(c) for c in row.cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def to_json(boards: list[Board]) -> str:
    """``boards`` as indented JSON: each board's fields plus its ``title``."""
    return json.dumps([asdict(board) | {"title": board.title} for board in boards], indent=1)
