"""The report's attribution-map picture (repreval.render.maps.draw_maps), read back from the PNG: each stored map,
colour-mapped on its own scale, lies in its cell; cells are found from the picture's own colours, not from the
drawing code's layout."""

from __future__ import annotations

from typing import Any

import numpy as np

from repreval.render.maps import draw_maps

#: inferno at 0, 1/2 and 1 (matplotlib's table), and pure green: an RGB input min-max scaled
COLD, MIDDLE, HOT, GREEN = (0, 0, 3), (187, 55, 84), (252, 254, 164), (0, 255, 0)
VARIANTS, LAYERS, INPUTS = ("trained", "random"), ("a", "b"), 3


def _pattern(index: int) -> np.ndarray:
    """A 4×4 map at 1/2 with its hottest pixel at cell ``index`` (row-major) and its coldest one opposite."""
    row, column = divmod(index, 4)
    pattern = np.full((4, 4), 0.5)
    pattern[row, column], pattern[3 - row, 3 - column] = 1.0, 0.0
    return pattern


def _index(variant: int, layer: int, image: int) -> int:
    return (variant * len(LAYERS) + layer) * INPUTS + image


def _store(directory) -> None:
    """Maps as the runner keeps them: 16×16 inputs, layer a 8×8 and layer b 4×4, both as affine copies of the
    pattern (the picture scales each map from its minimum to its maximum); the random variant lacks layer b."""
    (directory / "maps").mkdir()
    inputs = np.zeros((INPUTS, 3, 16, 16), dtype=np.float32)
    inputs[:, 1] = 2.5  # green only
    for v, variant in enumerate(VARIANTS):
        arrays: dict[str, Any] = {"inputs": inputs, "components": np.array([8, 8])}
        for layer, upsampling in ((0, 2), (1, 1))[: 2 - v]:
            maps = [np.kron(_pattern(_index(v, layer, i)), np.ones((upsampling, upsampling))) for i in range(INPUTS)]
            arrays[f"grads|{LAYERS[layer]}"] = (7 * np.stack(maps) - 3).astype(np.float32)
        np.savez_compressed(directory / "maps" / f"m--{variant}.npz", **arrays)


def _spans(present: np.ndarray) -> list[tuple[int, int]]:
    """The runs [start, stop) of True in a 1-d mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def _near(pixels: np.ndarray, colour) -> np.ndarray:
    return np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) <= 3


def _centre(mask: np.ndarray) -> np.ndarray:
    """Where a mask's pixels lie on average, as a share of its height and width."""
    rows, columns = np.nonzero(mask)
    return np.array([(rows.mean() + 0.5) / mask.shape[0], (columns.mean() + 0.5) / mask.shape[1]])


def test_each_stored_map_lies_colour_mapped_in_its_cell(tmp_path):
    from PIL import Image

    _store(tmp_path)
    assert draw_maps(tmp_path) == [tmp_path / "plots" / "maps-m-grads.png"]
    with Image.open(tmp_path / "plots" / "maps-m-grads.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    middle = _near(pixels, MIDDLE)
    rows, columns = _spans(middle.any(axis=1)), _spans(middle.any(axis=0))
    assert len(rows) == INPUTS and len(columns) == 3  # trained a, trained b, random a; random b blank
    sizes = {stop - start for start, stop in rows + columns}
    assert max(sizes) - min(sizes) <= 1  # square cells of one size, though the maps were 8×8 and 4×4
    for image, (top, bottom) in enumerate(rows):
        for (v, layer), (left, right) in zip([(0, 0), (0, 1), (1, 0)], columns):
            cell = pixels[top:bottom, left:right]
            assert _near(cell, MIDDLE).mean() > 0.8
            row, column = divmod(_index(v, layer, image), 4)
            np.testing.assert_allclose(_centre(_near(cell, HOT)), [(row + 0.5) / 4, (column + 0.5) / 4], atol=0.02)
            np.testing.assert_allclose(_centre(_near(cell, COLD)), [(3.5 - row) / 4, (3.5 - column) / 4], atol=0.02)
    green = _near(pixels, GREEN)
    (input_left, input_right), cell = _spans(green.any(axis=0))[0], rows[0][1] - rows[0][0]
    assert _spans(green.any(axis=0)) == [(input_left, input_right)] and input_right <= columns[0][0]
    green_rows = _spans(green.any(axis=1))  # the inputs beside their rows
    assert len(green_rows) == INPUTS and np.abs(np.array(green_rows) - np.array(rows)).max() <= 1
    assert abs(input_right - input_left - cell) <= 1
    beyond = pixels[rows[0][0] : rows[-1][1], columns[-1][1] :]
    assert beyond.shape[1] > cell and (beyond >= 250).all()  # the blank cell of random b


def test_pictures_reuse_the_runs_maps_and_equal_a_fresh_computation(tmp_path, plugins, monkeypatch):
    """The stored picture maps of a run (taken from its first batch: no engine call of their own) equal
    keep_picture_maps computing them all again for the same inputs."""
    from dataclasses import replace

    import numpy as np

    from repreval.drawings import maps_file
    from repreval.plan import make_plan
    from repreval.runner import pictures, resolve_device
    from repreval.runner.compute import model_of
    from repreval.runner.inputs import Inputs
    from repreval.runner.pictures import attribution_groups, keep_picture_maps
    from repreval.runs import run
    from repreval.suite import parse_suite

    suite = {
        "name": "pictured",
        "datasets": {"digits": {"kind": "digits", "limit": 4}},
        "models": {"ae": {"model": "ae:classifier", "layers": ["encoder.block1", "encoder.block2"]}},
        "variants": ["random"],
        "evaluation": {"dataset": "digits", "saliency": ["gradients", "grad_cam"], "channel_aggregators": ["abs"],
                       "embedding_aggregators": ["var"], "scores": ["variance_score", "noise_score"]},
    }  # fmt: skip
    asked: list[int] = []
    engine = pictures.compute_maps
    monkeypatch.setattr(
        pictures,
        "compute_maps",
        lambda net, requests, *a, **k: asked.append(len(requests)) or engine(net, requests, *a, **k),
    )
    run(suite, out=tmp_path / "run", plugins=plugins)
    assert asked == []  # every picture map came from the run's first batch
    monkeypatch.undo()
    stored = np.load(maps_file(tmp_path / "run", "ae", "random"))
    parsed = parse_suite(suite, plugins)
    plan = make_plan(replace(parsed, output=tmp_path / "fresh"), plugins)
    variant = plan.variants["ae"][0]
    inputs = Inputs(plan.suite, plugins, resolve_device("cpu"))
    model = model_of(plan, plugins, "ae", inputs, "cpu")
    network = plan.variant(variant).network(model, plan.suite.seed)
    network.module.eval()
    batches = inputs.batch_source(network, "digits")
    keep_picture_maps(plan, network, batches, variant, "ae", attribution_groups(plan, "ae", variant))
    fresh = np.load(maps_file(tmp_path / "fresh", "ae", "random"))
    assert sorted(stored.files) == sorted(fresh.files) and len(stored.files) == 6  # inputs, components, 4 maps
    for key in stored.files:
        assert np.allclose(stored[key], fresh[key], rtol=1e-5, atol=1e-7), key


def test_a_sampled_run_pictures_the_mean_of_its_own_sampled_components(tmp_path, plugins, monkeypatch):
    """With sample_components the pictures average the run's k sampled maps (no engine call of their own) and say
    so: components [D, k]."""
    import numpy as np

    from repreval.drawings import maps_file
    from repreval.runner import pictures
    from repreval.runs import run

    suite = {
        "name": "sampled",
        "datasets": {"digits": {"kind": "digits", "limit": 4}},
        "models": {"ae": {"model": "ae:classifier", "layers": ["encoder.block2"]}},
        "variants": ["random"],
        "evaluation": {"dataset": "digits", "saliency": ["gradients"], "channel_aggregators": ["abs"],
                       "embedding_aggregators": ["mean"], "scores": ["noise_score"], "sample_components": 4},
    }  # fmt: skip
    asked: list[int] = []
    engine = pictures.compute_maps
    monkeypatch.setattr(pictures, "compute_maps", lambda *a, **k: asked.append(1) or engine(*a, **k))
    run(suite, out=tmp_path / "run", plugins=plugins)
    stored = np.load(maps_file(tmp_path / "run", "ae", "random"))
    assert asked == [] and stored["components"].tolist() == [10, 4]


def test_pictures_computed_apart_from_a_sampling_run_average_no_more_than_its_k(tmp_path, plugins, monkeypatch):
    """Pictures a sampling run computes on their own (here: its maps file lost, the next run draws them again)
    average k components, not PICTURE_COMPONENTS: they never cost more than the numbers (VGG-11, D = 4096 and
    k = 4: 256 components took 92 s of a 124 s run)."""
    import numpy as np

    from repreval.drawings import maps_file
    from repreval.runner import pictures
    from repreval.runs import run

    suite = {
        "name": "sampled",
        "datasets": {"digits": {"kind": "digits", "limit": 4}},
        "models": {"ae": {"model": "ae:classifier", "layers": ["encoder.block2"]}},
        "variants": ["random"],
        "evaluation": {"dataset": "digits", "saliency": ["gradients"], "scores": ["noise_score"],
                       "sample_components": 3},
    }  # fmt: skip
    run(suite, out=tmp_path / "run", plugins=plugins)
    maps_file(tmp_path / "run", "ae", "random").unlink()
    asked: list[int] = []
    engine = pictures.compute_maps
    monkeypatch.setattr(pictures, "compute_maps", lambda *a, **k: asked.append(len(k["components"])) or engine(*a, **k))
    run(suite, out=tmp_path / "run", plugins=plugins)
    stored = np.load(maps_file(tmp_path / "run", "ae", "random"))
    assert asked == [3] and stored["components"].tolist() == [10, 3]
