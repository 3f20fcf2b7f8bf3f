"""``publish``, ``export`` and ``import`` on hand-made result folders (records written directly, values chosen by
the test): one page per folder whatever the suites' names, a refused merge writes nothing, the curves' axes
place every point at its value, a row keeps its colour across the site and equal rows stay visible; exports
carry the attribution maps and imports write the leaderboards and the report again."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.render.site import nice_ticks, publish
from repreval.store import ResultStore, ScoreRecord

LAYERS = ["stem", "stage1", "stage2", "stage3"]
SVG = "{http://www.w3.org/2000/svg}"


def _folder(path: Path, rows: dict[str, list[float]], *, name: str, seed: int = 0, score: str = "noise_score") -> Path:
    """A results folder of suite ``name``: one record per row (``model · variant``) and layer, with 4 per-input
    values centred on the given layer value."""
    store = ResultStore(path)
    common = {"suite": name, "model_spec": "x:y", "saliency": "gradients", "channel_aggregator": "abs",
              "embedding_aggregator": "mean", "score": score, "higher_is_better": True, "reference": 0.1,
              "reference_values": [0.1] * 4, "n_inputs": 4, "dataset": "held", "seed": seed}  # fmt: skip
    for row, curve in rows.items():
        model, variant = row.split(" · ")
        for index, value in enumerate(curve):
            values = [value - 0.03, value - 0.01, value + 0.01, value + 0.03]
            unit = f"{model}-{variant}-{index}-{score}"
            store.write(ScoreRecord(unit_id=unit, model=model, variant=variant, layer=LAYERS[index], layer_index=index,
                                    value=float(np.mean(values)), spread=float(np.std(values)), values=values,
                                    **common))  # fmt: skip
    (path / "suite.yaml").write_text(f"name: {name}\n")
    return path


def _pages(index: Path) -> list[str]:
    """The pages the index links to."""
    return re.findall(r'<a href="([^"]+)/index.html">', index.read_text())


def _cells(page: Path) -> list[float]:
    """The numbers of the page's cells (each its record's value)."""
    return sorted(
        round(float(v), 9) for v in re.findall(r'class="num cell"[^>]*data-value="([^"]+)"', page.read_text())
    )


def _charts(page: Path) -> list[ElementTree.Element]:
    """The page's inline score curves, parsed as XML."""
    return [ElementTree.fromstring(svg) for svg in re.findall(r'<svg viewBox="0 0 \d+ \d+".*?</svg>', page.read_text(), re.S)
            if 'role="img"' in svg]  # fmt: skip


def _rows(chart: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {group.get("data-row"): group for group in chart.iter(f"{SVG}g")}


def _points(group: ElementTree.Element) -> list[tuple[float, float]]:
    line = group.find(f"{SVG}polyline")
    return [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]


def test_folders_whose_suites_share_a_name_get_a_page_each(tmp_path):
    folders = {
        tmp_path / "a" / "quickstart": ("quickstart", {"ae · trained": [0.5, 0.6, 0.7, 0.8]}),
        tmp_path / "b" / "quickstart": ("quickstart", {"ae · trained": [0.1, 0.2, 0.3, 0.4]}),
        tmp_path / "eval-r18-11111111": ("eval-r18", {"r18 · random": [0.2, 0.2, 0.2, 0.2]}),
        tmp_path / "eval-r18-22222222": ("eval-r18", {"r18 · random": [0.3, 0.3, 0.3, 0.3]}),
        tmp_path / "other": ("alone", {"ae · trained": [0.9, 0.9, 0.9, 0.9]}),
    }
    for path, (name, rows) in folders.items():
        _folder(path, rows, name=name)
    index = publish([*folders, tmp_path / "other"], tmp_path / "site")  # a folder given twice: one page
    pages = _pages(index)
    readable = {"eval-r18-11111111", "eval-r18-22222222", "alone"}  # the suite's name, else the folder's
    assert readable <= set(pages) and len(pages) == len(folders)
    assert all(page.startswith("quickstart-") for page in set(pages) - readable)  # the name and a path hash
    shown = sorted(_cells(tmp_path / "site" / page / "index.html") for page in pages)
    assert shown == sorted(sorted(curve) for _, rows in folders.values() for curve in rows.values())  # its own
    html = index.read_text()
    assert all(f"<code>{folder.as_posix()}</code>" in html for folder in folders)  # the index tells them apart
    again = publish(list(reversed(list(folders))), tmp_path / "again")
    assert set(_pages(again)) == set(pages)  # stable: the same folders get the same pages


def test_a_refused_merge_writes_nothing(tmp_path, capsys):
    first = _folder(tmp_path / "first", {"ae · trained": [0.5, 0.6, 0.7, 0.8]}, name="one")
    second = _folder(tmp_path / "second", {"ae2 · trained": [0.5, 0.6, 0.7, 0.8]}, name="two", seed=1)
    with pytest.raises(ReprevalError, match="seed 0 vs 1"):
        publish([first, second], tmp_path / "site", merged=True)
    assert not (tmp_path / "site").exists()
    publish([first], tmp_path / "kept")
    before = {path: path.read_bytes() for path in (tmp_path / "kept").rglob("*") if path.is_file()}
    assert main(["publish", str(first), str(second), "--merge", "--out", str(tmp_path / "kept")]) == 2
    assert "cannot rank" in capsys.readouterr().err
    after = {path: path.read_bytes() for path in (tmp_path / "kept").rglob("*") if path.is_file()}
    assert after == before  # the earlier site as it was: no page of the refused publish


def test_curves_have_value_ticks_and_layer_labels_that_place_every_point(tmp_path):
    curves = {"ae · trained": [0.213, 0.387, 0.402, 0.55], "ae · random": [0.31, 0.29, 0.305, 0.3]}
    index = publish([_folder(tmp_path / "f", curves, name="axes")], tmp_path / "site")
    (chart,) = _charts(index.parent / "axes" / "index.html")
    texts = {cls: [t for t in chart.iter(f"{SVG}text") if t.get("class") == cls] for cls in ("y-tick", "x-tick")}
    assert [t.text for t in texts["x-tick"]] == LAYERS  # every layer named under its tick, shallow to deep
    grid = [float(line.get("y1")) for line in chart.iter(f"{SVG}line") if line.get("class") == "grid"]
    ticks = [(float(t.text), height) for t, height in zip(texts["y-tick"], grid, strict=True)]  # value, its line
    values, heights = zip(*ticks)
    assert values == tuple(sorted(values)) and len(values) >= 3
    assert min(values) <= 0.213 and max(values) >= 0.55  # the axis spans every value
    steps = np.diff(values)
    assert np.allclose(steps, steps[0]) and round(steps[0] / 10 ** np.floor(np.log10(steps[0])), 6) in {1, 2, 2.5, 5}

    def value_at(height: float) -> float:  # linear interpolation between the outer ticks: the reader's way
        return values[0] + (height - heights[0]) / (heights[-1] - heights[0]) * (values[-1] - values[0])

    xs = [float(t.get("x")) for t in texts["x-tick"]]
    for name, group in _rows(chart).items():
        points = _points(group)
        assert [x for x, _ in points] == pytest.approx(xs)
        assert [value_at(y) for _, y in points] == pytest.approx(curves[name], abs=1e-3)  # drawn to 0.1 px


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.213, 0.55, [0.2, 0.3, 0.4, 0.5, 0.6]), (0.0, 0.25, [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]),
     (-1.3, 2.2, [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]), (0.1021, 0.1029, [0.102, 0.1022, 0.1024, 0.1026, 0.1028, 0.103]),
     (12, 87, [0, 20, 40, 60, 80, 100])],
)  # fmt: skip
def test_value_ticks_are_round_numbers_spanning_the_values(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_a_row_keeps_its_colour_on_every_board_and_page_and_equal_rows_stay_visible(tmp_path):
    # variance: random ranks first, so the boards list the rows in different orders
    noise = {"ae · trained": [0.5, 0.6, 0.7, 0.8], "ae · random": [0.3, 0.3, 0.3, 0.3],
             "ae · copy": [0.2, 0.25, 0.2, 0.25], "ae · twin": [0.2, 0.25, 0.2, 0.25]}  # fmt: skip
    folder = _folder(tmp_path / "f", noise, name="one")
    _folder(folder, {"ae · random": [0.2, 0.2, 0.2, 0.2], "ae · trained": [0.1, 0.1, 0.1, 0.1]}, name="one",
            score="variance_score")  # fmt: skip
    other = _folder(
        tmp_path / "g", {"ae · twin": [0.1, 0.2, 0.3, 0.4], "ae · trained": [0.4, 0.3, 0.2, 0.1]}, name="two"
    )
    index = publish([folder, other], tmp_path / "site")
    charts = _charts(index.parent / "one" / "index.html") + _charts(index.parent / "two" / "index.html")
    assert len(charts) == 3
    colours: dict[str, set[str]] = {}
    for chart in charts:
        for name, group in _rows(chart).items():
            colours.setdefault(name, set()).add(group.find(f"{SVG}polyline").get("stroke"))
    assert all(len(seen) == 1 for seen in colours.values()), colours  # one colour per row, site-wide
    assert len({seen.pop() for seen in colours.values()}) == 4  # and different rows, different colours

    rows = next(_rows(chart) for chart in charts if "ae · copy" in _rows(chart))
    assert _points(rows["ae · copy"]) == _points(rows["ae · twin"])  # drawn at the same place ...
    styles = {(group.get("data-marker"), group.get("data-dash")) for group in rows.values()}
    assert len(styles) == len(rows)  # ... but every row of a chart has its own marker and dash
    for name in ("ae · copy", "ae · twin"):
        markers = rows[name].findall(f"{SVG}path")
        assert len(markers) == 4 and all(m.find(f"{SVG}title").text.startswith(name) for m in markers)
    html = (index.parent / "one" / "index.html").read_text()
    assert "equal rows stay visible" in html  # the legend says so


def _maps_file(path: Path) -> None:
    """Maps as the runner keeps them: three inputs, the component count, one [inputs, h, w] map per method|layer."""
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.random((3, 1, 8, 8), dtype=np.float32), "components": np.array([4, 4])}
    arrays |= {
        f"gradients|{layer}": rng.random((3, 8 >> i, 8 >> i), dtype=np.float32) for i, layer in enumerate(LAYERS)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def test_export_carries_the_maps_and_import_writes_the_leaderboards_and_report(tmp_path, capsys):
    source = _folder(tmp_path / "source", {"ae · trained": [0.5, 0.6, 0.7, 0.8], "ae · random": [0.3] * 4}, name="x")
    for variant in ("trained", "random"):
        _maps_file(source / "maps" / f"ae--{variant}.npz")
    assert main(["leaderboard", str(source), "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["export", str(source), "--out", str(tmp_path / "x.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "x.zip") as bundle:
        assert {"maps/ae--trained.npz", "maps/ae--random.npz"} <= set(bundle.namelist())
    assert main(["import", str(tmp_path / "x.zip"), "--out", str(tmp_path / "back")]) == 0
    back = tmp_path / "back"
    for variant in ("trained", "random"):
        assert (back / "maps" / f"ae--{variant}.npz").read_bytes() == (
            source / "maps" / f"ae--{variant}.npz"
        ).read_bytes()
    assert json.loads((back / "leaderboard.json").read_text()) == expected
    report = (back / "report.md").read_text()
    assert "## Attribution maps" in report and "plots/maps-ae-gradients.png" in report
    from PIL import Image

    with Image.open(back / "plots" / "maps-ae-gradients.png") as picture:
        assert picture.width > 100


@pytest.mark.parametrize(
    "content",
    [b"not a zip", "pickled", "objects", "no inputs", "mismatched inputs", "empty map"],
)
def test_an_import_checks_the_maps_before_anything_lands(tmp_path, capsys, content):
    source = _folder(tmp_path / "source", {"ae · trained": [0.5, 0.6, 0.7, 0.8]}, name="x")
    rng = np.random.default_rng(1)
    good = {"inputs": rng.random((3, 1, 8, 8)), "components": np.array([4, 4]), "gradients|stem": rng.random((3, 8, 8))}
    bad = {
        "pickled": good | {"extra": np.array([{"a": 1}], dtype=object)},
        "objects": good | {"gradients|stem": np.array(["a", "b", "c"])},
        "no inputs": {k: v for k, v in good.items() if k != "inputs"},
        "mismatched inputs": good | {"gradients|stem": rng.random((2, 8, 8))},
        "empty map": good | {"gradients|stem": np.zeros((3, 0, 8))},
    }
    maps = source / "maps" / "ae--trained.npz"
    maps.parent.mkdir()
    if isinstance(content, bytes):
        maps.write_bytes(content)
    else:
        np.savez_compressed(maps, **bad[content])
    assert main(["export", str(source), "--out", str(tmp_path / "x.zip")]) == 0
    capsys.readouterr()
    assert main(["import", str(tmp_path / "x.zip"), "--out", str(tmp_path / "back")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "maps/ae--trained.npz" in error and "damaged" in error
    assert not (tmp_path / "back").exists() or not list((tmp_path / "back").rglob("*.json"))
