"""What the command line tells a new user without being asked twice: ``--version``, the ``(embedding)`` column
explained where it appears and in ``layers``' caption, and the normalisation a ``torch:`` model gets by default
(``list models`` and ``layers``)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from repreval.cli import main
from repreval.leaderboard import Board, Cell, Row
from repreval.render import board_legend


def words(text: str) -> str:
    """``text`` with every run of whitespace as one space (rich wraps captions and table cells)."""
    return " ".join(text.replace("│", " ").split())


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"repreval {version('repreval')}\n"


def test_layers_caption_explains_the_embedding_column_and_the_input_normalisation(capsys, plugins):
    from repreval.inspection import build_network

    assert main(["layers", "ae:classifier"]) == 0
    caption = words(capsys.readouterr().out)
    assert "in a column '(embedding)': it is no probe layer" in caption
    spec = build_network(plugins, "ae:classifier", options={}).input_spec
    mean, std = (", ".join(f"{v:g}" for v in values) for values in (spec.mean, spec.std))
    assert f"Inputs: resized to {spec.height}×{spec.width}, normalised with mean {mean} and std {std}" in caption


def test_list_models_shows_the_default_normalisation_of_torch_models(capsys):
    from repreval_builtins.torch_factory import IMAGENET_MEAN, IMAGENET_STD, input_spec

    assert main(["list", "models"]) == 0
    listed = words(capsys.readouterr().out)
    spec = input_spec({})
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)  # what the description states is what is used
    assert f"ImageNet's mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}" in listed


def test_a_board_with_an_embedding_column_explains_it():
    row = Row("m", "trained", [Cell("ok", value=0.9)], 0.9, True, None)
    embedding = Board("linear_probe", None, None, None, True, None, ["(embedding)"], [row])
    layers = Board("noise_score", "gradients", "abs", "mean", True, None, ["layer1"], [row])
    assert "(embedding): the score reads the embedding itself" in board_legend(embedding)
    assert "(embedding)" not in board_legend(layers)
