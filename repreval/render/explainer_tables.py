"""The report's explainer section (Part 2): one row per explained layer (model · variant · layer · explainer) in
three tables (what the parts carry, where they are against baselines that locate nothing, how diverse they are),
the training's final losses and pulls, and the pictures."""

from __future__ import annotations

from pathlib import Path

from ..drawings import explainer_picture, explainer_picture_data
from ..store import ScoreRecord

#: The tables: (heading, what its cells mean, {metric: column heading})
_TABLES = (
    (
        "What the parts carry",
        "Held-out images; mean ± std over images. ‖F − F^‖ / ‖F‖ from the mix, then from each track's contribution "
        "alone (the other zeroed, the gate as trained); accuracy: the performer's top-1 when its upper layers "
        "receive F^ (its own in brackets), then on each track's F^ alone. p is the gate: it weighs the two tracks "
        "after their norm layers, but only the ablations say how much of F each track carries.",
        {
            "reconstruction_error": "‖F − F^‖/‖F‖",
            "interpretable_reconstruction_error": "interpretable alone",
            "ordinary_reconstruction_error": "ordinary alone",
            "accuracy": "accuracy on F^",
            "accuracy_drop": "drop",
            "interpretable_accuracy": "interpretable alone",
            "ordinary_accuracy": "ordinary alone",
            "part_share": "gate p",
        },
    ),
    (
        "Where the parts are",
        "Location instability (std over images of the distance from a filter's peak to each landmark, over the "
        "image diagonal, averaged over landmarks; mean ± std over filters; lower: more stable) of the explainer's "
        "filters and the performer's channels, beside three baselines that locate nothing: each explainer filter "
        "frozen at the cell where it peaks most often, a filter fixed at one cell (mean over cells; the centre "
        "cell and the best cell in brackets), filters peaking at random cells. Moving: the share of filters "
        "whose peak leaves its usual cell on at least 10 % of images and follows a landmark (correlation, "
        "Bonferroni over landmarks and axes); stuck: filters on one cell in at least 90 % of images.",
        {
            "location_instability": "explainer",
            "performer_location_instability": "performer",
            "frozen_location_instability": "frozen twins",
            "fixed_location_instability": "fixed cell (centre, best)",
            "random_location_instability": "random cells",
            "moving_fraction": "moving: explainer",
            "performer_moving_fraction": "moving: performer",
        },
    ),
    (
        "How diverse the parts are",
        "Per held-out image: distinct peak cells among the firing filters (of the filter count in brackets), and "
        "the mean cosine similarity of two firing filters' maps (0: disjoint, 1: the same map).",
        {"distinct_peaks": "distinct peaks per image", "filter_overlap": "pairwise overlap"},
    ),
)

#: What the report says about where the landmarks of the instability measure came from
_LANDMARK_NOTES = {
    "none": "No landmarks on these images: location instability is not measured.",
    "ink": "Landmarks derived from each image's ink (topmost, bottommost, leftmost and rightmost ink points and the "
    "centroid): a proxy for annotated object parts, not the paper's annotations.",
    "own": "Landmarks given by the dataset itself.",
}

#: Explained layers, ``(model, variant, layer, explainer)``, each with its records by metric
_Explained = dict[tuple[str, str, str, str], dict[str, ScoreRecord]]


def explainer_section(records: list[ScoreRecord], directory: Path) -> list[str]:
    """The section's markdown lines (none without explainer records); pictures drawn where their data is newer."""
    groups = _explained(records)
    if not groups:
        return []
    lines = ["## Explainers", ""]
    for heading, meaning, columns in _TABLES:
        if any(metric in metrics for metrics in groups.values() for metric in columns):
            lines += _table(groups, heading, meaning, columns)
    sources = sorted({r.provenance.get("landmarks", "none") for m in groups.values() for r in m.values()})
    lines += [_LANDMARK_NOTES.get(source, f"Landmarks from `{Path(source).name}`.") for source in sources] + [""]
    lines += _training(groups)
    pictures = [(" · ".join(key), _picture(directory, key)) for key in sorted(groups)]
    return lines + _pictures([(caption, path) for caption, path in pictures if path.is_file()], directory)


def _table(groups: _Explained, heading: str, meaning: str, columns: dict[str, str]) -> list[str]:
    lines = [f"### {heading}", "", meaning, ""]
    lines += ["| model · variant · layer · explainer | " + " | ".join(columns.values()) + " |"]
    lines += ["|---|" + "---:|" * len(columns)]
    for key, metrics in sorted(groups.items()):
        cells = [_cell(metric, metrics.get(metric)) for metric in columns]
        lines.append(f"| {' · '.join(key)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _explained(records: list[ScoreRecord]) -> _Explained:
    """The explainer records (those with the performer's weight hash), by explained layer and metric."""
    groups: _Explained = {}
    for record in records:
        if "performer_sha256_before" not in record.provenance:
            continue
        explainer, _, metric = record.score.rpartition(".")
        groups.setdefault((record.model, record.variant, record.layer, explainer), {})[metric] = record
    return groups


def _cell(metric: str, found: ScoreRecord | None) -> str:
    """Mean ± std of one metric, with what the metric adds in brackets; — where there is none."""
    if found is None or found.value is None:
        return "—"
    extras = found.extras
    if metric == "accuracy" and "performer_accuracy" in extras:
        return f"{found.value:.3f} ({extras['performer_accuracy']:.3f})"
    if metric.endswith("moving_fraction"):
        total = extras.get(f"{metric}_filters", 0)
        stuck = (
            f", {extras['stuck_filters']:.0f} stuck"
            if metric == "moving_fraction" and "stuck_filters" in extras
            else ""
        )
        return f"{found.value:.2f} (of {total:.0f}{stuck})"
    if metric == "fixed_location_instability" and "fixed_location_instability_centre" in extras:
        centre, best = extras["fixed_location_instability_centre"], extras["fixed_location_instability_best"]
        return f"{found.value:.3f} ({centre:.3f}, {best:.3f})"
    if metric == "distinct_peaks" and "part_filters" in extras:
        return f"{found.value:.1f} ± {found.spread or 0.0:.1f} (of {extras['part_filters']:.0f})"
    return f"{found.value:.3f} ± {found.spread or 0.0:.3f}"


def _training(groups: _Explained) -> list[str]:
    """Each explainer's training (epochs, seconds per epoch, cached), its final losses and pulls on the filters
    (norm of each term's gradient on the interpretable track's last conv weights), and the performer's weight
    hash before and after."""
    logged = sorted(
        {
            key
            for metrics in groups.values()
            for r in metrics.values()
            for key in r.extras
            if key.startswith("explainer_final_")
        }
    )
    header = [key.removeprefix("explainer_final_") for key in logged]
    lines = [
        "### Training",
        "",
        "Final training losses (mean over the last epoch); *pull*: the norm of a term's weighted gradient on the "
        "interpretable filters' weights at the last mini-batch (a term with no pull does not train the filters); "
        "performer weights: SHA-256 before and after the explainer's training.",
        "",
        "| explained | training | " + " | ".join(header) + " | performer weights |",
        "|---|---|" + "---:|" * len(header) + "---|",
    ]
    for explained, metrics in sorted(groups.items()):
        record = next(iter(metrics.values()))
        extras, provenance = record.extras, record.provenance
        training = (
            f"{extras.get('explainer_epochs', 0):.0f} epochs × {extras.get('explainer_seconds_per_epoch', 0):.1f} s"
            + (" (cached)" if extras.get("explainer_cached") else "")
        )
        values = " | ".join(f"{extras[key]:.4g}" if key in extras else "—" for key in logged)
        before, after = provenance["performer_sha256_before"], provenance.get("performer_sha256_after", "")
        weights = f"{before[:12]} = after" if before == after else f"**changed** {before[:12]} → {after[:12]}"
        lines.append(f"| {' · '.join(explained)} | {training} | {values} | {weights} |")
    return [*lines, ""]


def _picture(directory: Path, key: tuple[str, str, str, str]) -> Path:
    """The picture of one explained layer, drawn from the data the run stored where the PNG is missing or older
    than the data (a folder from before the data was kept has the PNG only: it stays as it is)."""
    picture, data = explainer_picture(directory, *key), explainer_picture_data(directory, *key)
    if data.is_file() and (not picture.is_file() or picture.stat().st_mtime < data.stat().st_mtime):
        from .parts import draw_parts_picture

        draw_parts_picture(data, picture, " · ".join(key))
    return picture


def _pictures(pictures: list[tuple[str, Path]], directory: Path) -> list[str]:
    """The explainers' pictures, each under its caption (none: nothing)."""
    if not pictures:
        return []
    lines = [
        "Where the filters fire on four held-out images: the explainer's five strongest interpretable filters, "
        "then the performer's five strongest channels at the same layer (map over the input, × at the peak; "
        "landmarks as dots in the first column).",
        "",
    ]
    for caption, picture in pictures:
        lines += [f"*{caption}*", "", f"![{caption}]({picture.relative_to(directory).as_posix()})", ""]
    return lines
