"""``repreval bench`` results as rich tables (the numbers come from :mod:`repreval.bench`)."""

from __future__ import annotations

from rich.table import Table

from . import plain


def bench_table(rows: list, totals: dict, *, title: str, precision: str, command: str) -> Table:
    """Engine (c) against the rerun (a) and reuse (b) loops per layer and method, with the whole curve."""
    table = Table(title=plain(title, "table.title"), title_justify="left", header_style="bold")
    lower = precision != "float32"
    columns = [
        "layer",
        "method",
        "mode",
        "D",
        "(a) rerun s",
        "(b) reuse s",
        "(c) engine s",
        "a/c",
        "b/c",
        "peak MB a/b/c",
        "max|c-b|",
    ]
    if lower:  # (d): the engine at the lower precision, against (c) at float32
        columns += [f"(d) {precision} s", "c/d", "rel Δ", "mean-map Δ"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "method", "mode") else "right")
    for r in rows:
        cells = [
            plain(r.layer),
            plain(r.method),
            r.strategy,
            str(r.components),
            f"{r.rerun_seconds:.2f}",
            f"{r.reuse_seconds:.2f}",
            f"{r.engine_seconds:.2f}",
            f"{r.rerun_ratio:.1f}",
            f"{r.reuse_ratio:.1f}",
            f"{r.rerun_peak_mb:.0f}/{r.reuse_peak_mb:.0f}/{r.engine_peak_mb:.0f}",
            f"{r.max_abs_difference:.1e}",
        ]
        if lower:
            cells += [
                f"{r.precision_seconds:.2f}",
                f"{r.engine_seconds / r.precision_seconds:.2f}",
                f"{r.precision_max_relative:.1e}",
                f"{r.precision_mean_map_difference:.1e}",
            ]
        table.add_row(*cells)
    scaled = any(r.loop_components < r.components for r in rows)
    table.caption = (
        f"whole curve: (a) {totals['curve_rerun_seconds']:.1f} s, (b) {totals['curve_reuse_seconds']:.1f} s, "
        f"(c) {totals['curve_engine_seconds']:.1f} s; a/c = {totals['curve_rerun_ratio']:.1f}, "
        f"b/c = {totals['curve_reuse_ratio']:.1f}"
        + ("; loops timed on 32 components and scaled to D" if scaled else "")
        + (
            f"\n(d): the engine under {precision} autocast; rel Δ = max|d - c| / max|c|, "
            "mean-map Δ = max|N(mean_D d) - N(mean_D c)|"
            if lower
            else ""
        )
        + f"\nreproduce: {command}"
    )
    table.caption = plain(table.caption, "table.caption")
    return table


def training_table(rows: list, *, title: str, epochs: int, command: str) -> Table:
    """Training seconds per bottleneck and constraint setting, with the ratio to the unconstrained run."""
    names = list(dict.fromkeys(r.constraints for r in rows))
    table = Table(title=plain(title, "table.title"), title_justify="left", header_style="bold")
    table.add_column("bottleneck D", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for bottleneck in dict.fromkeys(r.bottleneck for r in rows):
        cells = {r.constraints: f"{r.seconds:.2f} ({r.ratio:.2f}×)" for r in rows if r.bottleneck == bottleneck}
        table.add_row(str(bottleneck), *[cells[name] for name in names])
    table.caption = plain(
        f"{epochs} epoch(s) of mini-batches of 64, lambda 0.1, scores every 20 mini-batches; "
        f"paper: NS 11× to 130×\nreproduce: {command}",
        "table.caption",
    )
    return table
