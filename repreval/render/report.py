"""A suite's :class:`repreval.findings.Findings` -> ``report.md`` with its plots and pictures (written next to it);
``write_report``."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean, pstdev

from ..analysis import DriftResult, Verdict, replicate_difference
from ..drawings import slug
from ..findings import Findings, build_findings
from ..folders import read_facts
from ..leaderboard import Board, build_leaderboards
from ..store import ResultStore, write_atomic
from . import markdown, row_colours
from .explainer_tables import explainer_section
from .plots import curve_plot, drift_plot, scatter_plot


def _link(path: Path, base: Path) -> str:
    return f"![{path.stem}]({path.relative_to(base).as_posix()})"


def _curve_boards(findings: Findings, boards: list[Board]) -> list[Board]:
    """Boards to draw: the selected metrics, or every attribution score with two or more layers."""
    multi = [b for b in boards if len(b.columns) > 1 and any(row.average is not None for row in b.rows)]
    if findings.curve_metrics is None:
        return multi
    chosen = []
    for board in multi:
        for selector in findings.curve_metrics:
            fields = (
                (selector.score, board.score),
                (selector.saliency, board.saliency),
                (selector.channels, board.channel_aggregator),
                (selector.components, board.embedding_aggregator),
            )
            if all(want is None or want == have for want, have in fields):
                chosen.append(board)
                break
    return chosen


def report_markdown(findings: Findings, boards: list[Board], plots: Path) -> str:
    """The whole report: title, findings, correlations, drift, replicates, curves, leaderboards."""
    lines = [f"# {findings.title}", ""]
    if findings.description:
        lines += [findings.description.strip(), ""]
    lines += _verdicts(findings)
    lines += _correlations(findings, plots)
    lines += _drift(findings, plots)
    lines += _replicates(findings)
    lines += explainer_section(findings.records, plots.parent)
    lines += _maps(plots.parent)
    lines += _curves(findings, boards, plots)
    leaderboards = markdown(boards, title="Leaderboards").splitlines()
    lines += ["#" + line if line.startswith("#") else line for line in leaderboards]  # one heading level down
    return "\n".join(lines) + "\n"


def _verdicts(findings: Findings) -> list[str]:
    if not findings.verdicts:
        return []
    tested = sum(verdict.p_report is not None for verdict in findings.verdicts)
    lines = [
        "## Findings against the paper",
        "",
        "Each kind of claim is judged by its own test, named beside each p. A comparison with a group of random "
        "networks (`random[seeds=K]`) takes the networks as the replicates: where the network falls among the K "
        "(exact rank p; the per-input tests against each copy are listed as within-network evidence); between two "
        "networks, the per-input values are paired where both saw the same inputs (else Welch); agreement at "
        "every layer needs each layer significant, disagreement is Holm-corrected across layers; `expect: same` "
        "is an equivalence test (TOST) within the stated margin; Δ: mean difference with its 95 % bootstrap "
        "interval. Thresholds are judged with each row's standard error, drift by the per-input trend tested over "
        "the inputs, replicates by the spread over seeds. p: the p-value the verdict rests on, and in brackets "
        f"that p after Holm's correction across the report's {tested} claims with a p-value; a verdict that is not "
        "significant after it is inconclusive. *Robust*: the same verdict (before that correction) against every "
        "other random copy the claim lists and under every reading of the score (raw, minus its chance level, over "
        "its chance level, where each exists).",
        "",
        f"| claim | paper | ours | p (Holm across {tested} claims) | verdict | robust? |",
        "|---|---|---|---:|---|---|",
    ]
    for verdict in findings.verdicts:
        p = "—" if verdict.p is None or verdict.p_report is None else f"{verdict.p:.2g} ({verdict.p_report:.2g})"
        lines.append(
            f"| {verdict.claim} | {verdict.paper} | {verdict.evidence} | {p} | **{verdict.verdict}** "
            f"| {verdict.robustness} |"
        )
    lines.append("")
    for verdict in findings.verdicts:
        lines += _verdict_details(verdict)
    return lines


def _verdict_details(verdict: Verdict) -> list[str]:
    """A claim's per-layer (per-row, per-group) lines and its robustness table; nothing where it has neither."""
    if not verdict.details and len(verdict.checks) < 2:
        return []
    lines = [f"*{verdict.claim}*:", ""]
    lines += [f"- {d}" for d in verdict.details] + ([""] if verdict.details else [])
    if len(verdict.checks) > 1:
        copies = any(check.lower for check in verdict.checks)  # a correlation has readings only
        header = ["against"] * copies + ["reading", "verdict", "Δ per judged layer (p)" if copies else "rho (p)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for check in verdict.checks:
            spread = ", ".join(f"{d:+.4f} ({p:.2g})" for d, p in zip(check.differences, check.p_values))
            cells = [check.lower] * copies + [check.reading, check.verdict, spread]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _correlations(findings: Findings, plots: Path) -> list[str]:
    if not findings.correlations:
        return []
    lines = [
        "## Correlations (Spearman, across model variants)",
        "",
        "| x | y | rho | p | n |",
        "|---|---|---:|---:|---:|",
    ]
    for c in findings.correlations:
        lines.append(f"| {c.x.label} | {c.y.label} | {c.rho:.3f} | {c.p:.2g} | {len(c.points)} |")
    lines.append("")
    left_out = sorted({row for c in findings.correlations for row in c.left_out})
    if left_out:
        lines += [
            "Left out of every correlation, as their networks embed exactly as another variant's (equal embeddings "
            "of the same inputs, so equal attribution scores: they would be ranked twice): " + "; ".join(left_out),
            "",
        ]
    for i, c in enumerate(findings.correlations):
        lines += [_link(scatter_plot(c, plots / f"correlation-{i}-{slug(c.x.label)}.png"), plots.parent), ""]
        lines += (
            ["| variant | x | y |", "|---|---:|---:|"] + [f"| {n} | {x:.4f} | {y:.4f} |" for n, x, y in c.points] + [""]
        )
    return lines


def _drift(findings: Findings, plots: Path) -> list[str]:
    if not findings.drift or findings.drift_metric is None:
        return []
    label = findings.drift_metric.label
    lines = [
        f"## Dataset drift: relative drop of {label}",
        "",
        "Per input, Spearman's rho between lambda and its relative drop over the drifted lambdas; the inputs are "
        "the replicates: Wilcoxon's signed-rank test of their rhos against 0. The correlation of the per-lambda "
        "means describes the average trend only: it hides how much the inputs disagree.",
        "",
    ]
    for result in findings.drift:
        lines += [f"**{result.model} · {result.variant}**: {_drift_trend(result)}", ""]
        lines += ["| lambda | mean | std | median |", "|---:|---:|---:|---:|"]
        for strength in result.lambdas:
            values = sorted(result.relative[strength])
            lines.append(
                f"| {strength:g} | {fmean(values):.3f} | {pstdev(values):.3f} | {values[len(values) // 2]:.3f} |"
            )
        plot = drift_plot(result, label, plots / f"drift-{slug(result.model + '-' + result.variant)}.png")
        lines += ["", _link(plot, plots.parent), ""]
    return lines


def _drift_trend(result: DriftResult) -> str:
    """``rho > 0 in 49, < 0 in 12 of 64 inputs; ...; over the per-lambda means rho = 0.983 (p = 1.9e-06)``."""
    means = f"over the per-lambda means rho = {result.rho_of_means:.3f} (p = {result.p_of_means:.2g})"
    test = result.over_inputs
    if test is None:
        return f"{result.defined} inputs with a trend, too few to test; {means}"
    undefined = len(result.input_rhos) - result.defined
    return (
        f"rho > 0 in {result.count('positive')}, < 0 in {result.count('negative')} of {len(result.input_rhos)} "
        + (f"inputs ({undefined} without a trend)" if undefined else "inputs")
        + f"; median rho {result.median_rho:.3f}, mean {test.difference:.3f} [{test.low:.3f}, {test.high:.3f}]; "
        f"Wilcoxon p = {test.p:.2g} (r = {test.effect:.2f}, {test.n} inputs); {means}"
    )


def _replicates(findings: Findings) -> list[str]:
    if not findings.replicates or findings.replicates_metric is None:
        return []
    label = findings.replicates_metric.label
    extra = [selector.label for selector, _ in findings.replicates_also]
    header = ["model", "seeds", label, "− baseline (± SE)", *extra, "training s", "× baseline time"]
    lines = [
        f"## Replicates: {label}",
        "",
        "mean ± std over seeds; − baseline: the difference from the baseline group's mean with its standard error "
        "(paired by seed where both groups ran the same seeds, else Welch over the seeds; with one seed, from "
        "the per-input values)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    by_group = {row.group: row for row in findings.replicates}
    for row in findings.replicates:
        seconds = f"{fmean(row.train_seconds):.1f}" if row.train_seconds else "—"
        ratio = f"{row.time_ratio:.2f} (vs {row.baseline})" if row.time_ratio is not None else "—"
        base = by_group.get(row.baseline) if row.baseline else None
        difference = replicate_difference(row, base).describe(signed=True) if base else "—"
        others = [
            f"{rows[row.group].mean:.4f} ± {rows[row.group].std:.4f}" if row.group in rows else "—"
            for _, rows in findings.replicates_also
        ]
        cells = " | ".join([difference, *others, seconds, ratio])
        lines.append(f"| {row.group} | {len(row.values)} | {row.mean:.3f} ± {row.std:.3f} | {cells} |")
    lines.append("")
    return lines


def _maps(directory: Path) -> list[str]:
    """The attribution-map pictures (repreval.render.maps) of the folder's stored maps."""
    from .maps import draw_maps

    pictures = draw_maps(directory)
    if not pictures:
        return []
    lines = [
        "## Attribution maps",
        "",
        "Two evaluation inputs and a noise input (rows); for each variant, trained beside random, a column per "
        "probe layer: the mean over embedding components of each channel-aggregated map (brighter: more "
        "attribution).",
        "",
    ]
    for picture in pictures:
        lines += [_link(picture, directory), ""]
    return lines


def _curves(findings: Findings, boards: list[Board], plots: Path) -> list[str]:
    curves = _curve_boards(findings, boards)
    if not curves:
        return []
    lines = [
        "## Score curves",
        "",
        "Mean over inputs (line), ± one standard deviation (band), chance level on noise inputs (dashed).",
        "",
    ]
    colours = row_colours(sorted(row.name for board in boards for row in board.rows))  # the same on every plot
    for board in curves:
        lines += [_link(curve_plot(board, plots / f"curve-{slug(board.title)}.png", colours), plots.parent), ""]
    return lines


def write_report(directory: str | Path) -> Path:
    """Write ``DIR/report.md`` and its plots under ``DIR/plots/`` from the results folder alone."""
    directory = Path(directory)
    records = ResultStore(directory).records(on_damaged=lambda _problem: None)  # the commands report them
    facts = read_facts(directory)
    findings = build_findings(records, facts)
    text = report_markdown(findings, build_leaderboards(records, groups=facts.variant_groups), directory / "plots")
    path = directory / "report.md"
    write_atomic(path, text)
    return path
