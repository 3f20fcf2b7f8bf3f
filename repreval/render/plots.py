"""matplotlib figures for reports (PNG, Agg backend: no display needed)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ..analysis import Correlation, DriftResult
from ..leaderboard import Board, Row
from . import ROW_COLOURS, row_colours

#: Most rows drawn in one curve plot; with more, only the trained and random rows are drawn.
MAX_CURVES = 12


def _figure(width: float, height: float):
    """A figure and its axes, drawn by Agg (no pyplot: no display, no global figure list, a faster import)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


#: Row colours: matplotlib's tab10, then tab20's lighter halves (a run with more rows cycles)
#: Characters of a 9-point title per inch of axes width (longer titles wrap at their " · ")
TITLE_CHARACTERS_PER_INCH = 13


def wrapped_title(title: str, characters: int) -> str:
    """``title`` in lines of about ``characters``, broken after its `` · `` separators (a longer part on a line of
    its own); no character is lost: joining the lines with a space gives ``title`` back."""
    lines: list[str] = []
    for part in title.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= characters:
            lines[-1] += f" · {part}"
        else:
            if lines:
                lines[-1] += " ·"
            lines.append(part)
    return "\n".join(lines)


def curve_plot(board: Board, path: Path, colours: Mapping[str, str] | None = None) -> Path:
    """Draw :func:`curve_figure` to ``path`` (PNG)."""
    return _save(curve_figure(board, colours), path)


def curve_figure(board: Board, colours: Mapping[str, str] | None = None):
    """Score curve over probe layers per row: mean ± std over inputs (band), chance level dashed, each row in its
    colour of ``colours`` (default: :func:`~repreval.render.row_colours` of its rows); the legend right of the axes, the
    title wrapped, the score's bound drawn only where the curves keep at least half the height."""
    from matplotlib.lines import Line2D

    rows = board.rows
    if len(rows) > MAX_CURVES:
        rows = [row for row in rows if row.variant in ("trained", "random")] or rows[:MAX_CURVES]
    colours = colours or row_colours(row.name for row in board.rows)
    legend_width = 0.6 + 0.065 * max([len(row.name) for row in rows] + [24])  # inches, 7-point labels
    axes_width = max(5.0, 0.9 * len(board.columns) + 2.5)
    figure, axes = _figure(axes_width + legend_width, max(3.6, 1.6 + 0.17 * (len(rows) + 2)))
    positions = list(range(len(board.columns)))
    drawn: list[float] = []  # every y drawn: the bound is judged against them
    for row in rows:
        drawn += _draw_row(axes, row, positions, colours.get(row.name, ROW_COLOURS[0]))
    handles, _ = axes.get_legend_handles_labels()
    if any(c.reference is not None for row in rows for c in row.cells):
        handles.append(Line2D([], [], color="black", linestyle="--", label="chance level (noise inputs)"))
    if board.bound and board.bound != 1.0 and drawn:
        low, high = min(drawn), max(drawn)
        if max(board.bound, high) - min(board.bound, low) <= 2 * (high - low):
            bound = axes.axhline(
                board.bound, color="black", linewidth=0.8, linestyle=":", label=f"bound {board.bound:g}"
            )
            handles.append(bound)
        else:  # a line that far off would squash the curves flat
            handles.append(Line2D([], [], linestyle="none", label=f"bound {board.bound:g}: off the scale"))
    axes.set_xticks(positions, board.columns, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(board.score)
    axes.set_title(wrapped_title(board.title, int(axes_width * TITLE_CHARACTERS_PER_INCH)), fontsize=9)
    if handles:  # nothing to label when no row has a value
        axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return figure


def _draw_row(axes, row: Row, positions: list[int], colour: str) -> list[float]:
    """One row's curve, band and chance level; the y values drawn."""
    points = [(i, c) for i, c in zip(positions, row.cells) if c.status == "ok" and c.value is not None]
    if not points:
        return []
    xs = [i for i, _ in points]
    means = [c.value for _, c in points if c.value is not None]
    spreads = [c.spread or 0.0 for _, c in points]
    lows, highs = [m - s for m, s in zip(means, spreads)], [m + s for m, s in zip(means, spreads)]
    axes.plot(xs, means, marker="o", color=colour, label=row.name)
    axes.fill_between(xs, lows, highs, color=colour, alpha=0.15)
    references = [(i, c.reference) for i, c in points if c.reference is not None]
    if references:
        axes.plot([i for i, _ in references], [r for _, r in references], linestyle="--", color=colour, alpha=0.8)
    return lows + highs + [r for _, r in references]


def scatter_plot(correlation: Correlation, path: Path) -> Path:
    """Scatter plot of ``correlation``'s points (labelled when 25 or fewer) with rho, p and n; returns ``path``."""
    figure, axes = _figure(5.2, 4.0)
    xs = [x for _, x, _ in correlation.points]
    ys = [y for _, _, y in correlation.points]
    axes.scatter(xs, ys)
    if len(correlation.points) <= 25:
        for name, x, y in correlation.points:
            short = re.sub(r"^\w+\[\w+=(.*)\]$", r"\1", name)  # randomize_layer[layer=conv1] -> conv1
            axes.annotate(short, (x, y), fontsize=6, alpha=0.8, xytext=(3, 3), textcoords="offset points")
    axes.set_xlabel(correlation.x.label, fontsize=8)
    axes.set_ylabel(correlation.y.label, fontsize=8)
    axes.set_title(
        f"Spearman rho = {correlation.rho:.3f} (p = {correlation.p:.2g}, n = {len(correlation.points)})", fontsize=9
    )
    return _save(figure, path)


def drift_plot(result: DriftResult, metric_label: str, path: Path) -> Path:
    """Box plot of the per-input relative score drop per drift strength lambda, with the per-input trend tested
    over the inputs; returns ``path``."""
    figure, axes = _figure(6.0, 3.8)
    axes.boxplot([result.relative[s] for s in result.lambdas])
    axes.set_xticks(range(1, len(result.lambdas) + 1), [f"{s:g}" for s in result.lambdas])
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("drift lambda")
    axes.set_ylabel("relative drop (NS(x) - NS(x_lambda)) / NS(x)", fontsize=8)
    trend = f"median {result.median_rho:.2f}, Wilcoxon p = {result.over_inputs.p:.2g}" if result.over_inputs else "none"
    axes.set_title(
        f"{result.model} · {result.variant}: {metric_label}\nper input, Spearman(lambda, drop): {trend}", fontsize=9
    )
    return _save(figure, path)
