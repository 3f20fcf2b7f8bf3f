"""Publishing: the static site opened in a real headless browser (Debian's chromium driven by Playwright),
merging result folders, and exporting / importing one."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import digits_suite

from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.folders import ResultFolder, export_folder, import_folder, merge
from repreval.leaderboard import build_leaderboards
from repreval.render.report import write_report
from repreval.render.site import publish
from repreval.runner import run_suite
from repreval.store import ResultStore
from repreval.suite import parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(plugins, out: Path, **changes) -> Path:
    spec = digits_suite()
    spec["models"]["ae"]["layers"] = ["encoder.block1", "encoder.block2"]
    spec["evaluation"]["saliency"] = ["gradients"]
    for key, value in changes.items():
        spec[key] = value
    suite = parse_suite(spec, plugins)
    suite.output = out
    assert not run_suite(suite, plugins).failures
    write_report(out)  # report.md and its plots, as `repreval run` writes them
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory, plugins) -> Path:
    return _run(plugins, tmp_path_factory.mktemp("published") / "tiny")


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on this machine (apt install chromium)")
    return playwright.sync_playwright(), executable


def test_the_published_site_loads_sorts_and_shows_the_records_numbers(results, tmp_path):
    index = publish([results], tmp_path / "site")
    records = {record.unit_id: record for record in ResultStore(results).records()}
    manager, executable = _browser()
    with manager as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(index.as_uri())
        page.click("text=tiny")  # the suite's page, through the index's link
        page.wait_for_load_state("load")
        assert "tiny" in page.title()

        cells = page.eval_on_selector_all(
            "td.cell", "cells => cells.map(c => [c.dataset.unit, c.textContent.trim().split(' ')[0]])"
        )
        assert len(cells) == sum(1 for r in records.values() if r.status == "ok")
        for unit, shown in cells:
            assert shown == f"{records[unit].value:.3f}"  # every number is its record's

        table = page.locator("table.leaderboard").first
        means = "t => Array.from(t.tBodies[0].rows).map(r => Number(r.cells[3].dataset.sort))"
        table.locator("th", has_text="mean").first.click()
        ascending = table.evaluate(means)
        assert ascending == sorted(ascending)
        table.locator("th", has_text="mean").first.click()
        assert table.evaluate(means) == sorted(ascending, reverse=True)

        images = page.eval_on_selector_all("img", "images => images.map(i => [i.complete, i.naturalWidth])")
        assert images and all(complete and width > 0 for complete, width in images)
        assert page.locator("svg path.marker title").count() > 0  # hover values on the curves
        assert not problems, problems
        browser.close()


def test_publish_from_the_command_line(results, tmp_path, capsys):
    assert main(["publish", str(results), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "tiny" / "index.html").is_file()
    assert main(["publish", str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]) == 2
    assert "no results in" in capsys.readouterr().err


def test_folders_with_different_seeds_are_not_ranked_together(results, tmp_path, plugins, capsys):
    other = _run(plugins, tmp_path / "seed1", seed=1)
    with pytest.raises(ReprevalError, match="seed 0 vs 1"):
        merge([ResultFolder.read(results), ResultFolder.read(other)])
    assert main(["leaderboard", str(results), str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot rank" in err


def test_folders_of_different_models_merge_into_the_ranking_of_one_run(tmp_path, plugins):
    spec = digits_suite()
    both = dict(spec["models"])
    both["ae2"] = {**spec["models"]["ae"], "options": {"bottleneck": 3}}
    together = _run(plugins, tmp_path / "both", models=both)
    first = _run(plugins, tmp_path / "first", models={"ae": both["ae"]})
    second = _run(plugins, tmp_path / "second", models={"ae2": both["ae2"]})
    merged = build_leaderboards(merge([ResultFolder.read(first), ResultFolder.read(second)]))
    single = build_leaderboards(ResultStore(together).records())

    def ranking(boards):
        return [(b.title, [(r.rank, r.name, r.average) for r in b.rows]) for b in boards]

    assert ranking(merged) == ranking(single)


def test_export_and_import_round_trip(results, tmp_path, capsys):
    archive = export_folder(results, tmp_path / "tiny.zip")
    folder = import_folder(archive, tmp_path / "imported")
    assert sorted(r.unit_id for r in folder.records) == sorted(r.unit_id for r in ResultStore(results).records())
    assert (tmp_path / "imported" / "suite.yaml").is_file() and (tmp_path / "imported" / "plots").is_dir()
    assert main(["leaderboard", str(tmp_path / "imported"), "--format", "json"]) == 0

    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as bundle:
        bundle.writestr("records/../../escape.json", "{}")
    with pytest.raises(ReprevalError, match="which no export writes"):
        import_folder(tmp_path / "evil.zip", tmp_path / "elsewhere")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(damaged, "w") as bundle:
        for name in source.namelist():
            bundle.writestr(name, b"{" if name.startswith("records/") else source.read(name))
    with pytest.raises(ReprevalError, match="damaged"):
        import_folder(damaged, tmp_path / "not-here")
    assert not (tmp_path / "not-here" / "records").exists()  # nothing lands from a damaged export
    assert main(["import", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "x")]) == 2


def test_show_draws_one_images_maps_and_sketches_them(tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray((255 * np.eye(28)).astype("uint8")).save(image)
    out = tmp_path / "maps.png"
    code = main(["show", "ae:drift", "--input", str(image), "--layer", "encoder.block2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    for method in ("gradients", "activations_x_gradients", "grad_cam"):
        assert f"{method} at encoder.block2 (14×14):" in printed
    assert any(shade in printed for shade in "░▒▓█")
    assert main(["show", "ae:drift", "--input", str(image), "--layer", "encoder.nothing"]) == 2
    assert "--layer: no layer 'encoder.nothing'" in capsys.readouterr().err


def test_runs_keep_maps_and_reports_draw_trained_beside_random(results):
    assert sorted(path.name for path in (results / "maps").glob("*.npz")) == ["ae--random.npz", "ae--trained.npz"]
    pictures = sorted(path.name for path in (results / "plots").glob("maps-*.png"))
    assert pictures == ["maps-ae-gradients.png"]
    assert "## Attribution maps" in (results / "report.md").read_text()
