"""matplotlib figures for reports (PNG, Agg backend: no display needed)."""

from __future__ import annotations

import re
from pathlib import Path

from ..analysis import Correlation, DriftResult
from ..leaderboard import Board

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


def curve_plot(board: Board, path: Path) -> Path:
    """Score curve over probe layers per row: mean ± std over inputs (band), chance level dashed."""
    rows = board.rows
    if len(rows) > MAX_CURVES:
        rows = [row for row in rows if row.variant in ("trained", "random")] or rows[:MAX_CURVES]
    figure, axes = _figure(max(5.0, 0.9 * len(board.columns) + 2.5), 3.6)
    positions = list(range(len(board.columns)))
    for row in rows:
        points = [(i, c, c.value) for i, c in zip(positions, row.cells) if c.status == "ok" and c.value is not None]
        if not points:
            continue
        xs = [i for i, _, _ in points]
        means = [value for _, _, value in points]
        spreads = [c.spread or 0.0 for _, c, _ in points]
        (line,) = axes.plot(xs, means, marker="o", label=row.name)
        axes.fill_between(
            xs,
            [m - s for m, s in zip(means, spreads)],
            [m + s for m, s in zip(means, spreads)],
            color=line.get_color(),
            alpha=0.15,
        )
        references = [(i, c.reference) for i, c, _ in points if c.reference is not None]
        if references:
            axes.plot(
                [i for i, _ in references],
                [r for _, r in references],
                linestyle="--",
                color=line.get_color(),
                alpha=0.8,
                label=f"{row.name} (chance)",
            )
    if board.bound and board.bound != 1.0:
        axes.axhline(board.bound, color="grey", linewidth=0.8, linestyle=":", label=f"bound {board.bound:g}")
    axes.set_xticks(positions, board.columns, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(board.score)
    axes.set_title(board.title, fontsize=9)
    if axes.get_legend_handles_labels()[0]:  # nothing to label when no row has a value
        axes.legend(fontsize=7, loc="best")
    return _save(figure, path)


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
