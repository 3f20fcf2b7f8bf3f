"""Leaderboard renderers: rich tables for the terminal, Markdown for reports, JSON for machines."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..leaderboard import Board, Cell, Row

MISSING = "—"


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
        title=escape(f"{board.title}  ({direction})"), title_justify="left", caption_justify="left", header_style="bold"
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
        table.add_column(escape(column), justify="right", overflow="fold")
    for row in board.rows:
        cells = [Text(cell_text(c), style="red" if c.status == "failed" else "") for c in row.cells]
        extra = [_bound_text(board, row)] if _shows_bound(board) else []
        table.add_row(
            str(row.rank or MISSING),
            escape(row.model),
            escape(" · ".join(p for p in (row.variant, row.dataset) if p)),
            _average_text(row),
            *extra,
            _number(row.reference_average),
            *([_signed(row.above_chance)] if board.has_chance else []),
            *cells,
        )
    legend = "cells: mean ±std over inputs; chance: the same score on noise inputs; − chance: mean minus chance"
    if any(not row.complete for row in board.rows):
        legend += "; * = some layers missing"
    table.caption = "\n".join(part for part in (escape(board.interpretation()), legend) if part)
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
