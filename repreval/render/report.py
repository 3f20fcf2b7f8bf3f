"""A :class:`repreval.report.Report` -> Markdown with its plots (written next to it)."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean, pstdev

from ..leaderboard import Board
from ..report import Report
from . import markdown
from .plots import curve_plot, drift_plot, scatter_plot, slug


def _link(path: Path, base: Path) -> str:
    return f"![{path.stem}]({path.relative_to(base).as_posix()})"


def _curve_boards(report: Report, boards: list[Board]) -> list[Board]:
    """Boards to draw: the selected metrics, or every attribution score with two or more layers."""
    multi = [b for b in boards if len(b.columns) > 1]
    if report.curve_metrics is None:
        return multi
    chosen = []
    for board in multi:
        for selector in report.curve_metrics:
            fields = ((selector.score, board.score), (selector.saliency, board.saliency),
                      (selector.channels, board.channel_aggregator), (selector.components, board.embedding_aggregator))
            if all(want is None or want == have for want, have in fields):
                chosen.append(board)
                break
    return chosen


def report_markdown(report: Report, boards: list[Board], plots: Path) -> str:
    base = plots.parent
    lines = [f"# {report.title}", ""]
    if report.description:
        lines += [report.description.strip(), ""]
    if report.verdicts:
        lines += ["## Findings against the paper", "", "| claim | paper | ours | verdict |", "|---|---|---|---|"]
        for verdict in report.verdicts:
            lines.append(f"| {verdict.claim} | {verdict.paper} | {verdict.evidence} | **{verdict.verdict}** |")
        lines.append("")
        for verdict in report.verdicts:
            if verdict.details:
                lines += [f"*{verdict.claim}*:", ""] + [f"- {d}" for d in verdict.details] + [""]
    if report.correlations:
        lines += ["## Correlations (Spearman, across model variants)", "", "| x | y | rho | p | n |", "|---|---|---:|---:|---:|"]
        for c in report.correlations:
            lines.append(f"| {c.x.label} | {c.y.label} | {c.rho:.3f} | {c.p:.2g} | {len(c.points)} |")
        lines.append("")
        for i, c in enumerate(report.correlations):
            lines += [_link(scatter_plot(c, plots / f"correlation-{i}-{slug(c.x.label)}.png"), base), ""]
            lines += ["| variant | x | y |", "|---|---:|---:|"] + [f"| {n} | {x:.4f} | {y:.4f} |" for n, x, y in c.points] + [""]
    if report.drift:
        lines += [f"## Dataset drift: relative drop of {report.drift_metric.label}", ""]
        for result in report.drift:
            lines += [f"**{result.model} · {result.variant}**: Spearman(lambda, relative drop) = {result.rho:.3f} "
                      f"(p = {result.p:.2g}, every input); over the per-lambda means {result.rho_of_means:.3f} (p = {result.p_of_means:.2g})", ""]
            lines += ["| lambda | mean | std | median |", "|---:|---:|---:|---:|"]
            for strength in result.lambdas:
                values = sorted(result.relative[strength])
                lines.append(f"| {strength:g} | {fmean(values):.3f} | {pstdev(values):.3f} | {values[len(values) // 2]:.3f} |")
            lines += ["", _link(drift_plot(result, report.drift_metric.label, plots / f"drift-{slug(result.model + '-' + result.variant)}.png"), base), ""]
    if report.replicates:
        extra = [selector.label for selector, _ in report.replicates_also]
        header = ["model", "seeds", report.replicates_metric.label, *extra, "training s", "× baseline time"]
        lines += [f"## Replicates: {report.replicates_metric.label}", "", "mean ± std over seeds", "",
                  "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for row in report.replicates:
            seconds = f"{fmean(row.train_seconds):.1f}" if row.train_seconds else "—"
            ratio = f"{row.time_ratio:.2f} (vs {row.baseline})" if row.time_ratio is not None else "—"
            others = [f"{rows[row.group].mean:.4f} ± {rows[row.group].std:.4f}" if row.group in rows else "—" for _, rows in report.replicates_also]
            lines.append(f"| {row.group} | {len(row.values)} | {row.mean:.3f} ± {row.std:.3f} | " + " | ".join(others + [seconds, ratio]) + " |")
        lines.append("")
    curves = _curve_boards(report, boards)
    if curves:
        lines += ["## Score curves", "", "Mean over inputs (line), ± one standard deviation (band), chance level on noise inputs (dashed).", ""]
        for board in curves:
            lines += [_link(curve_plot(board, plots / f"curve-{slug(board.title)}.png"), base), ""]
    leaderboards = markdown(boards, title="Leaderboards").splitlines()
    lines += ["#" + line if line.startswith("#") else line for line in leaderboards]  # one heading level down
    return "\n".join(lines) + "\n"
