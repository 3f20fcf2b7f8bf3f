"""Report curves (repreval.render.plots), checked on matplotlib's objects after drawing, not on pixels: the legend
lies outside the axes and inside the figure, a long title is wrapped with every character kept, a far bound does
not squash the curves, and a row has one colour on every plot of a run."""

from __future__ import annotations

import pytest

from repreval.leaderboard import Board, Cell, Row
from repreval.render import ROW_COLOURS, row_colours
from repreval.render.plots import curve_figure, curve_plot, wrapped_title

LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]
LONG_TITLE = "variance_score[binarize=true] · activations_x_gradients · channels=abs · components=mean"


def _row(model: str, variant: str, values: list[float], chance: float | None = 0.01) -> Row:
    cells = [Cell("ok", value=v, spread=0.002, reference=chance) for v in values]
    return Row(model, variant, cells, sum(values) / len(values), True, chance)


def _board(rows: list[Row], *, score: str = "variance_score", bound: float | None = 0.25, **names) -> Board:
    names = {"saliency": "gradients", "channel_aggregator": "abs", "embedding_aggregator": None, **names}
    return Board(score, higher_is_better=True, bound=bound, columns=LAYERS[: len(rows[0].cells)], rows=rows, **names)


def _drawn(figure):
    """The axes and renderer of ``figure`` laid out and drawn as the report saves it (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure.tight_layout()
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return figure.axes[0], canvas.get_renderer()


def test_the_legend_lies_outside_the_axes_and_inside_the_figure():
    rows = [_row(f"model{i}", "trained", [0.01 * i + 0.01 * j for j in range(5)]) for i in range(8)]
    axes, renderer = _drawn(curve_figure(_board(rows)))
    legend = axes.get_legend().get_window_extent(renderer)
    plotted = axes.get_window_extent(renderer)
    page = axes.figure.bbox
    assert legend.x0 >= plotted.x1  # right of the data, covering none of it
    assert page.x0 <= legend.x0 and legend.x1 <= page.x1 and page.y0 <= legend.y0 and legend.y1 <= page.y1
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels[:8] == [row.name for row in rows] and "chance level (noise inputs)" in labels


def test_a_long_title_is_wrapped_whole_and_fits_the_figure():
    board = _board(
        [_row("m", "trained", [0.1, 0.2])],
        score="variance_score[binarize=true]",
        saliency="activations_x_gradients",
        embedding_aggregator="mean",
    )
    assert board.title == LONG_TITLE
    axes, renderer = _drawn(curve_figure(board))
    title = axes.title
    assert "\n" in title.get_text()
    assert title.get_text().replace("\n", " ") == LONG_TITLE  # nothing cut
    extent, page = title.get_window_extent(renderer), axes.figure.bbox
    assert page.x0 <= extent.x0 and extent.x1 <= page.x1 and extent.y1 <= page.y1


@pytest.mark.parametrize(("characters", "lines"), [(1, 4), (40, 3), (60, 2), (200, 1)])
def test_wrapping_keeps_every_character_and_breaks_only_after_separators(characters, lines):
    wrapped = wrapped_title(LONG_TITLE, characters).split("\n")
    assert " ".join(wrapped) == LONG_TITLE
    assert len(wrapped) == lines
    assert all(line.endswith(" ·") for line in wrapped[:-1])
    for line in wrapped:  # longer than asked only where one part alone is
        assert len(line.removesuffix(" ·")) <= characters or " · " not in line.removesuffix(" ·")


def test_a_far_bound_is_named_not_drawn_so_the_curves_keep_the_height():
    low = _board([_row("m", "trained", [0.010, 0.020, 0.030])])  # data 0.008 to 0.032; the bound 0.25 is far
    axes, _ = _drawn(curve_figure(low))
    assert not [line for line in axes.get_lines() if list(line.get_ydata()) == [0.25, 0.25]]
    bottom, top = axes.get_ylim()
    assert top < 0.05  # the curves fill the axes
    assert "bound 0.25: off the scale" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_a_near_bound_is_drawn():
    high = _board([_row("m", "trained", [0.15, 0.18, 0.20], chance=0.14)])  # data 0.138 to 0.202; bound 0.25
    axes, _ = _drawn(curve_figure(high))
    assert [line for line in axes.get_lines() if list(line.get_ydata()) == [0.25, 0.25]]
    assert axes.get_ylim()[1] >= 0.25
    assert "bound 0.25" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_a_row_has_the_same_colour_on_every_plot_of_a_run(tmp_path):
    names = [("resnet", "trained"), ("resnet", "random"), ("vit", "trained"), ("vit", "random")]
    first = _board([_row(m, v, [0.1, 0.2]) for m, v in names])
    second = _board([_row(m, v, [0.3, 0.1]) for m, v in reversed(names[1:])], score="noise_score", bound=None)
    colours = row_colours(sorted(row.name for board in (first, second) for row in board.rows))
    assert list(colours) == sorted(f"{m} · {v}" for m, v in names)  # the run's rows, sorted: palette in turn
    assert list(colours.values()) == list(ROW_COLOURS[:4])

    def line_colours(board):
        axes, _ = _drawn(curve_figure(board, colours))
        return {line.get_label(): line.get_color() for line in axes.get_lines() if not line.get_label().startswith("_")}

    one, two = line_colours(first), line_colours(second)
    assert set(two) < set(one)
    assert all(two[name] == one[name] == colours[name] for name in two)
    assert len(set(one.values())) == len(one)  # rows on one plot never share a colour
    assert curve_plot(first, tmp_path / "curve.png", colours).stat().st_size > 0
