"""``repreval publish``: result folders -> a static site (Jinja2 templates in ``repreval/templates/site``).

One page per folder (its leaderboards as sortable tables, the claims and their verdicts, score curves as
inline SVG with hover values and the report's PNG plots, the explainer pictures, and where every number came
from), an index, and with ``merge`` one more page ranking every folder's rows together. No server, no CDN:
the site opens from a file.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..drawings import slug
from ..findings import Findings, SuiteFacts, build_findings
from ..folders import MAX_SETTINGS_BYTES, ResultFolder, merge, read_facts
from ..leaderboard import Board, build_leaderboards
from ..store import read_regular
from . import board_legend, digits, ties_text

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "site"
#: The report's drawings a page shows, by folder
DRAWINGS = ("plots", "pictures")
#: Most rows one inline curve draws
CURVE_ROWS = 12
#: Size of an inline curve (SVG user units) and its margins
WIDTH, HEIGHT, MARGIN = 560, 240, 40


@dataclass
class Point:
    """One hoverable point of a curve: where it is drawn and what it says."""

    x: float
    y: float
    label: str


@dataclass
class Curve:
    """One row's score curve over the layers of a board, in SVG coordinates."""

    name: str
    colour: str
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass
class Page:
    """One page of the site: a folder (or the merge of several) with everything the template shows."""

    slug: str
    title: str
    description: str
    boards: list[Board]
    report: Findings | None  # the folder's findings (the claims' verdicts); the templates read page.report
    provenance: dict
    suite_text: str
    drawings: list[tuple[str, str]]  # (caption, path relative to the page)
    curves: dict[str, list[Curve]]  # board title -> curves
    command: str


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def _curves(board: Board) -> list[Curve]:
    """The board's rows as polylines over its layers (values only; none for a one-layer board)."""
    if len(board.columns) < 2:
        return []
    rows = board.rows[:CURVE_ROWS]
    values = [c.value for r in rows for c in r.cells if c.value is not None]
    if not values:
        return []
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (WIDTH - 2 * MARGIN) / (len(board.columns) - 1)
    curves = []
    for i, row in enumerate(rows):
        points = [
            Point(
                MARGIN + j * step,
                HEIGHT - MARGIN - (cell.value - low) / span * (HEIGHT - 2 * MARGIN),
                f"{row.name} @ {board.columns[j]}: {cell.value:.4f}",
            )
            for j, cell in enumerate(row.cells)
            if cell.value is not None
        ]
        curves.append(Curve(row.name, COLOURS[i % len(COLOURS)], points))
    return curves


def _provenance(folders: list[ResultFolder]) -> dict:
    """Seed, device, library versions and dates of the records, with every distinct value listed."""
    records = [r for folder in folders for r in folder.records]
    versions = sorted({f"{k} {v}" for r in records for k, v in r.versions.items()})
    dates = sorted(r.created for r in records)
    return {
        "suite": ", ".join(sorted({r.suite for r in records})),
        "seed": ", ".join(str(s) for s in sorted({r.seed for r in records})),
        "device": ", ".join(sorted({r.device for r in records})),
        "versions": ", ".join(versions),
        "records": len(records),
        "failed": sum(r.status != "ok" for r in records),
        "computed": f"{dates[0]} to {dates[-1]}" if dates else "",
    }


def _page(folder: ResultFolder, site: Path, link: bool) -> Page:
    name = slug(folder.name) or "results"
    target = site / name
    drawings = []
    for kind in DRAWINGS:
        source = folder.directory / kind
        for picture in sorted(source.glob("*.png")) if source.is_dir() and not source.is_symlink() else []:
            if not stat.S_ISREG(picture.lstat().st_mode):
                continue  # a link (it would publish what it leads to) or a FIFO (copying it would block)
            if link:  # referenced where it lies (a site published inside the repository it describes)
                path = Path(os.path.relpath(picture.resolve(), target.resolve())).as_posix()
            else:
                (target / kind).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(picture, target / kind / picture.name)
                path = f"{kind}/{picture.name}"
            drawings.append((picture.stem.replace("-", " "), path))
    facts = read_facts(folder.directory)
    boards = build_leaderboards(folder.records, groups=facts.variant_groups)
    return Page(
        slug=name,
        title=str(facts.config.title or folder.name),
        description=str(folder.suite.get("description") or ""),
        boards=boards,
        report=build_findings(folder.records, facts),
        provenance=_provenance([folder]),
        suite_text=_suite_text(folder),
        drawings=drawings,
        curves={board.title: _curves(board) for board in boards},
        command=_command(folder, facts),
    )


def _suite_text(folder: ResultFolder) -> str:
    """The folder's ``suite.yaml`` as stored (:meth:`ResultFolder.read` has parsed it), or nothing."""
    if not folder.suite:
        return ""
    return read_regular(folder.directory / "suite.yaml", MAX_SETTINGS_BYTES).decode("utf-8")


def _command(folder: ResultFolder, facts: SuiteFacts) -> str:
    """How to recompute the folder: its suite file where the run recorded it (or where this repository keeps
    suites: next to the folder), else the copy stored in the folder."""
    directory = folder.directory.as_posix()
    for source in (facts.source, folder.directory.with_suffix(".yaml").as_posix()):
        if source and Path(source).is_file():
            return f"repreval run {source} --out {directory}"
    return f"repreval run {directory}/suite.yaml --out {directory}"


def _merged_page(folders: list[ResultFolder]) -> Page:
    records = merge(folders)
    groups = sorted({group for folder in folders for group in read_facts(folder.directory).variant_groups})
    boards = build_leaderboards(records, groups=groups)
    names = ", ".join(folder.name for folder in folders)
    return Page(
        slug="merged",
        title=f"Merged leaderboard: {names}",
        description="Rows of several result folders ranked together (same data and seed for every shared metric).",
        boards=boards,
        report=None,
        provenance=_provenance(folders),
        suite_text="",
        drawings=[],
        curves={board.title: _curves(board) for board in boards},
        command="repreval publish " + " ".join(f.directory.as_posix() for f in folders) + " --merge --out SITE",
    )


def publish(directories: list[str | Path], site: str | Path, *, merged: bool = False, link: bool = False) -> Path:
    """Write the site for ``directories`` to ``site``; return its index. ``link``: reference the folders' PNGs
    where they are (relative paths) instead of copying them, for a site kept next to its result folders."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    site = Path(site)
    folders = [ResultFolder.read(directory) for directory in directories]
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )
    environment.filters["number"] = lambda value, digits=3: "—" if value is None else f"{value:.{digits}f}"
    environment.filters["signed"] = lambda value, digits=3: "—" if value is None else f"{value:+.{digits}f}"
    environment.globals.update(sort_key=_sort_key, legend=board_legend, ties_text=ties_text, digits=digits)
    environment.globals.update(width=WIDTH, height=HEIGHT, margin=MARGIN)
    site.mkdir(parents=True, exist_ok=True)
    pages = [_page(folder, site, link) for folder in folders]
    if merged:
        pages.append(_merged_page(folders))
    for asset in ("site.css", "site.js"):
        shutil.copyfile(TEMPLATES / asset, site / asset)
    generated = datetime.now().isoformat(timespec="seconds")
    for page in pages:
        (site / page.slug).mkdir(parents=True, exist_ok=True)
        html = environment.get_template("suite.html").render(page=page, root="../", generated=generated)
        (site / page.slug / "index.html").write_text(html, encoding="utf-8")
    index = site / "index.html"
    index.write_text(environment.get_template("index.html").render(pages=pages, root="", generated=generated))
    return index


def _sort_key(value: float | None) -> str:
    """A cell's sort key for the page's script: the number, or empty (sorted last)."""
    return "" if value is None else repr(float(value))
