"""``repreval publish``: result folders -> a static site (Jinja2 templates in ``repreval/templates/site``).

One page per folder (its leaderboards as sortable tables, the claims and their verdicts, score curves as
inline SVG with axes and hover values and the report's PNG plots, the explainer pictures, and where every number
came from), an index, and with ``merge`` one more page ranking every folder's rows together. No server, no CDN:
the site opens from a file. Everything is read and checked before the first file is written, so a refused
publish (a merge of folders that cannot be ranked together, a damaged folder) leaves the site as it was.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..drawings import slug
from ..findings import Findings, SuiteFacts, build_findings
from ..folders import MAX_SETTINGS_BYTES, ResultFolder, merge, read_facts
from ..leaderboard import Board, build_leaderboards
from ..store import read_regular
from . import board_legend, digits, row_colours, ties_text

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "site"
#: The report's drawings a page shows, by folder
DRAWINGS = ("plots", "pictures")
#: Most rows one inline curve draws
CURVE_ROWS = 12
#: Size of an inline curve (SVG user units) and the plot area's margins: room for the y ticks' values on the
#: left and the layers' names (slanted) below
WIDTH, HEIGHT = 600, 280
LEFT, RIGHT, TOP, BOTTOM = 84, 20, 14, 78
#: About how many values the y axis shows, and most layer names the x axis writes (every k-th beyond)
Y_TICKS, X_LABELS = 5, 24
#: Longest layer name written under the x axis (longer ones end in "…"; the full name is the label's tooltip)
LABEL_CHARACTERS = 16
#: Row colours: the first ten rows of the site get these, later ones hues spread by the golden angle
#: Marker shapes and line dashes: on one board every drawn row gets another pair, so equal rows stay visible
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down", "cross")
DASHES = ("", "6 3", "2 2", "8 3 2 3")
MARKER_SIZE = 4.0
#: The polygon markers' corners on a unit shape (the circle and the cross are drawn otherwise)
CORNERS = {
    "square": ((-1, -1), (1, -1), (1, 1), (-1, 1)),
    "triangle": ((0, -1), (1, 1), (-1, 1)),
    "diamond": ((0, -1), (1, 0), (0, 1), (-1, 0)),
    "triangle-down": ((0, 1), (1, -1), (-1, -1)),
}
#: The merged page's slug (no folder's page takes it)
MERGED = "merged"


@dataclass
class Point:
    """One hoverable point of a curve: where it is drawn and what it says."""

    x: float
    y: float
    label: str


@dataclass
class Style:
    """How one row is drawn: its colour (the same on every board of the site), marker shape and line dash."""

    colour: str
    marker: str
    dash: str

    def marker_path(self, x: float, y: float, size: float = MARKER_SIZE) -> str:
        """The SVG path of the marker centred at (x, y)."""
        s = size
        if self.marker == "circle":
            return f"M{x - s:.1f},{y:.1f}a{s},{s} 0 1,0 {2 * s},0a{s},{s} 0 1,0 {-2 * s},0Z"
        if self.marker == "cross":
            return f"M{x - s:.1f},{y - s:.1f}l{2 * s},{2 * s}m0,{-2 * s}l{-2 * s},{2 * s}"
        return "M" + "L".join(f"{x + dx * s:.1f},{y + dy * s:.1f}" for dx, dy in CORNERS[self.marker]) + "Z"


@dataclass
class Curve:
    """One row's score curve over the layers of a board, in SVG coordinates."""

    name: str
    style: Style
    points: list[Point]

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass
class Tick:
    """A tick of an axis: its position along the axis (SVG units), what it says, and the full text if shortened."""

    position: float
    label: str
    title: str = ""


@dataclass
class Chart:
    """A board's score curves with their axes: values on y (ticks at round numbers), probe layers on x."""

    curves: list[Curve]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    y_title: str


@dataclass
class Page:
    """One page of the site: a folder (or the merge of several) with everything the template shows."""

    slug: str
    title: str
    folder: str  # the results folder as given ("" for the merged page)
    description: str
    boards: list[Board]
    report: Findings | None  # the folder's findings (the claims' verdicts); the templates read page.report
    provenance: dict
    suite_text: str
    drawings: list[tuple[str, str]]  # (caption, path relative to the page)
    command: str
    copies: list[tuple[Path, str]] = field(default_factory=list)  # (a drawing, where it goes below the site)
    charts: dict[str, Chart | None] = field(default_factory=dict)  # board title -> its curves (none: one layer)


def nice_ticks(low: float, high: float, count: int = Y_TICKS) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten) from at or below ``low`` to at
    or above ``high``; the first and last are the axis's ends."""
    if high - low <= 1e-12 * max(abs(low), abs(high), 1.0):  # a flat curve: a band around its value
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if raw <= m * power * (1 + 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the ticks' ``step`` needs (2.5e-2 needs 3)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if not math.isclose(round(step, decimals), step, rel_tol=1e-6):
        decimals += 1
    return f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0: no "-0.00"


def _chart(board: Board, colours: dict[str, str]) -> Chart | None:
    """The board's rows as polylines over its layers, with axes (none for a one-layer board). Rows that are drawn
    get marker shapes and dashes in the order of their colours, so equal rows do not hide each other."""
    if len(board.columns) < 2:
        return None
    rows = board.rows[:CURVE_ROWS]
    values = [c.value for r in rows for c in r.cells if c.value is not None]
    if not values:
        return None
    ticks = nice_ticks(min(values), max(values))
    low, high = ticks[0], ticks[-1]
    bottom, height = HEIGHT - BOTTOM, HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / (len(board.columns) - 1)

    def y(value: float) -> float:
        return bottom - (value - low) / (high - low) * height

    first_seen = {name: i for i, name in enumerate(colours)}
    order = sorted(range(len(rows)), key=lambda i: first_seen[rows[i].name])
    curves: list[Curve | None] = [None] * len(rows)
    for k, i in enumerate(order):
        row = rows[i]
        style = Style(colours[row.name], MARKERS[k % len(MARKERS)], DASHES[k % len(DASHES)])
        points = [
            Point(LEFT + j * step, y(cell.value), f"{row.name} @ {board.columns[j]}: {cell.value:.4f}")
            for j, cell in enumerate(row.cells)
            if cell.value is not None
        ]
        curves[i] = Curve(row.name, style, points)
    every = math.ceil(len(board.columns) / X_LABELS)
    x_ticks = [
        Tick(LEFT + j * step, _shortened(name) if j % every == 0 else "", name) for j, name in enumerate(board.columns)
    ]
    y_ticks = [Tick(y(value), tick_label(value, ticks[1] - ticks[0])) for value in ticks]
    return Chart([c for c in curves if c is not None], y_ticks, x_ticks, board.score)


def _shortened(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[: LABEL_CHARACTERS - 1] + "…"


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


def page_slugs(folders: list[ResultFolder], reserved: tuple[str, ...] = (MERGED,)) -> list[str]:
    """One page name per folder, unique and stable: the suite's name; where several folders share it, the
    folder's own name (when no other folder or suite has it), else the suite's name and a hash of the folder's
    path."""
    names = [slug(folder.name) or "results" for folder in folders]
    own = [slug(folder.directory.resolve().name) or "results" for folder in folders]
    taken, owned = Counter([*names, *reserved]), Counter(own)
    chosen = []
    for folder, name, mine in zip(folders, names, own):
        if taken[name] == 1:
            chosen.append(name)
        elif owned[mine] == 1 and taken[mine] == 0:
            chosen.append(mine)
        else:
            digest = hashlib.sha256(str(folder.directory.resolve()).encode()).hexdigest()[:8]
            chosen.append(f"{name}-{digest}")
    return chosen


def _page(folder: ResultFolder, name: str, link: bool, site: Path) -> Page:
    target = site / name
    drawings, copies = [], []
    for kind in DRAWINGS:
        source = folder.directory / kind
        for picture in sorted(source.glob("*.png")) if source.is_dir() and not source.is_symlink() else []:
            if not stat.S_ISREG(picture.lstat().st_mode):
                continue  # a link (it would publish what it leads to) or a FIFO (copying it would block)
            if link:  # referenced where it lies (a site published inside the repository it describes)
                path = Path(os.path.relpath(picture.resolve(), target.resolve())).as_posix()
            else:
                path = f"{kind}/{picture.name}"
                copies.append((picture, f"{name}/{path}"))
            drawings.append((picture.stem.replace("-", " "), path))
    facts = read_facts(folder.directory)
    return Page(
        slug=name,
        title=str(facts.config.title or folder.name),
        folder=folder.directory.as_posix(),
        description=str(folder.suite.get("description") or ""),
        boards=build_leaderboards(folder.records, groups=facts.variant_groups),
        report=build_findings(folder.records, facts),
        provenance=_provenance([folder]),
        suite_text=_suite_text(folder),
        drawings=drawings,
        command=_command(folder, facts),
        copies=copies,
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
    names = ", ".join(folder.name for folder in folders)
    return Page(
        slug=MERGED,
        title=f"Merged leaderboard: {names}",
        folder="",
        description="Rows of several result folders ranked together (same data and seed for every shared metric).",
        boards=build_leaderboards(records, groups=groups),
        report=None,
        provenance=_provenance(folders),
        suite_text="",
        drawings=[],
        command="repreval publish " + " ".join(f.directory.as_posix() for f in folders) + " --merge --out SITE",
    )


def publish(directories: list[str | Path], site: str | Path, *, merged: bool = False, link: bool = False) -> Path:
    """Write the site for ``directories`` to ``site``; return its index. ``link``: reference the folders' PNGs
    where they are (relative paths) instead of copying them, for a site kept next to its result folders. A folder
    given twice gets one page. Nothing is written before every page (and the merge) has been built."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    site = Path(site)
    given: dict[Path, Path] = {}
    for directory in directories:
        given.setdefault(Path(directory).resolve(), Path(directory))
    folders = [ResultFolder.read(directory) for directory in given.values()]
    pages = [_page(folder, name, link, site) for folder, name in zip(folders, page_slugs(folders))]
    if merged:
        pages.append(_merged_page(folders))
    colours = row_colours(sorted(row.name for page in pages for board in page.boards for row in board.rows))
    for page in pages:
        page.charts = {board.title: _chart(board, colours) for board in page.boards}

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )
    environment.filters["number"] = lambda value, digits=3: "—" if value is None else f"{value:.{digits}f}"
    environment.filters["signed"] = lambda value, digits=3: "—" if value is None else f"{value:+.{digits}f}"
    environment.globals.update(sort_key=_sort_key, legend=board_legend, ties_text=ties_text, digits=digits)
    environment.globals.update(width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT, top=TOP, bottom=BOTTOM)
    generated = datetime.now().isoformat(timespec="seconds")
    rendered = {
        page.slug: environment.get_template("suite.html").render(page=page, root="../", generated=generated)
        for page in pages
    }
    index_html = environment.get_template("index.html").render(pages=pages, root="", generated=generated)

    site.mkdir(parents=True, exist_ok=True)
    for asset in ("site.css", "site.js"):
        shutil.copyfile(TEMPLATES / asset, site / asset)
    for page in pages:
        for picture, destination in page.copies:
            (site / destination).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(picture, site / destination)
        (site / page.slug).mkdir(parents=True, exist_ok=True)
        (site / page.slug / "index.html").write_text(rendered[page.slug], encoding="utf-8")
    index = site / "index.html"
    index.write_text(index_html, encoding="utf-8")
    return index


def _sort_key(value: float | None) -> str:
    """A cell's sort key for the page's script: the number, or empty (sorted last)."""
    return "" if value is None else repr(float(value))
