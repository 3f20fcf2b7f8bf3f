"""Baselines of location instability, filters that move with the object, and the diversity of part maps, each
against an oracle of its own: numbers worked out by hand, plain-Python loops, scipy's Pearson test."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest
import torch
from scipy.stats import pearsonr

from repreval.landmarks import (
    MOVING_ALPHA,
    NO_CELL,
    STUCK_SHARE,
    _correlation_p,
    fixed_position_instability,
    modal_cells,
    moving_filters,
    peak_positions,
    random_position_instability,
)
from repreval.part_diversity import distinct_peaks, filter_overlap

NAN = math.nan
#: a 3×3 map over a 6×6 image: cell (row, col) covers 2×2 pixels, its centre at pixel (x, y) = (2 col + 0.5,
#: 2 row + 0.5); the diagonal is 6√2
MAP, IMAGE = (3, 3), (6, 6)
DIAGONAL = 6 * math.sqrt(2)
#: two landmarks on three images, B missing on the second
LANDMARKS = torch.tensor(
    [
        [[2.5, 2.5], [2.5, 6.5]],
        [[2.5, 5.5], [NAN, NAN]],
        [[5.5, 2.5], [5.5, 6.5]],
    ]
)


def oracle_instability(position: tuple[float, float], landmarks: list[list[tuple[float, float]]]) -> float:
    """Plain Python: mean over landmarks of the population std over images of |position - landmark| / diagonal
    for a filter at ``position`` on every image; landmarks missing (NaN) are left out."""
    spreads = []
    for k in range(len(landmarks[0])):
        distances = [
            math.hypot(position[0] - image[k][0], position[1] - image[k][1]) / DIAGONAL
            for image in landmarks
            if not math.isnan(image[k][0])
        ]
        if len(distances) >= 2:
            spreads.append(statistics.pstdev(distances))
    return sum(spreads) / len(spreads) if spreads else NAN


def maps_peaking_at(cells: list[list[tuple[int, int] | None]], size: tuple[int, int] = MAP) -> torch.Tensor:
    """Maps [N, K, h, w]: 0 everywhere but 1 at the cell (row, col) of image n, filter k; None: silent."""
    maps = torch.zeros(len(cells), len(cells[0]), *size)
    for n, row in enumerate(cells):
        for k, cell in enumerate(row):
            if cell is not None:
                maps[n, k, cell[0], cell[1]] = 1.0
    return maps


def test_the_centre_cell_by_hand():
    # cell (1, 1) sits at (2.5, 2.5). A: distances 0, 3, 3 -> std sqrt(2); B: 4, 5 (second image missing) -> 0.5
    expected = (math.sqrt(2) / DIAGONAL + 0.5 / DIAGONAL) / 2
    value = fixed_position_instability(torch.tensor([[1, 1]]), LANDMARKS, MAP, IMAGE)
    assert value.tolist() == pytest.approx([expected], rel=1e-6)
    # the same cell as a real filter's peak lands on the same pixel
    peaks, fires = peak_positions(maps_peaking_at([[(1, 1)]]), IMAGE)
    assert peaks.tolist() == [[[2.5, 2.5]]] and fires.tolist() == [[True]]


def test_every_cell_against_a_plain_loop():
    generator = torch.Generator().manual_seed(3)
    landmarks = torch.rand(7, 3, 2, generator=generator) * 6 - 0.5
    landmarks[2, 1] = NAN
    landmarks[4, 0] = NAN
    cells = [(row, col) for row in range(3) for col in range(3)]
    values = fixed_position_instability(torch.tensor(cells), landmarks, MAP, IMAGE)
    rows = [[tuple(point) for point in image] for image in landmarks.tolist()]
    expected = [oracle_instability((2 * col + 0.5, 2 * row + 0.5), rows) for row, col in cells]
    assert values.tolist() == pytest.approx(expected, rel=1e-5)


def test_no_cell_is_nan_and_a_cell_off_the_map_is_refused():
    values = fixed_position_instability(torch.tensor([NO_CELL, (0, 0)]), LANDMARKS, MAP, IMAGE)
    assert math.isnan(values[0]) and not math.isnan(values[1])
    with pytest.raises(ValueError, match=r"cell \(3, 0\) lies outside the 3×3 map"):
        fixed_position_instability(torch.tensor([[3, 0]]), LANDMARKS, MAP, IMAGE)
    # a landmark seen on one image gives no spread: NaN, as for a real filter
    assert math.isnan(fixed_position_instability(torch.tensor([[0, 0]]), LANDMARKS[:1], MAP, IMAGE)[0])


def test_random_positions_are_seeded_and_uniform_over_the_cells():
    one_landmark = torch.tensor([[[2.5, 2.5]]]).expand(4000, 1, 2)  # at the centre cell's centre on every image
    values = random_position_instability(one_landmark, MAP, IMAGE, filters=20, seed=7)
    assert torch.equal(values, random_position_instability(one_landmark, MAP, IMAGE, filters=20, seed=7))
    assert not torch.equal(values, random_position_instability(one_landmark, MAP, IMAGE, filters=20, seed=8))
    # a uniform cell is 0 away (1 cell of 9), 2 away (4) or 2√2 away (4): the population std of that distance
    mean = (0 + 4 * 2 + 4 * 2 * math.sqrt(2)) / 9
    expected = math.sqrt((4 * 4 + 4 * 8) / 9 - mean**2) / DIAGONAL
    assert values.mean().item() == pytest.approx(expected, rel=0.01)
    # one cell: the random filter is the fixed one
    single = random_position_instability(LANDMARKS, (1, 1), IMAGE, filters=2, seed=0)
    rows = [[tuple(point) for point in image] for image in LANDMARKS.tolist()]
    assert single.tolist() == pytest.approx([oracle_instability((2.5, 2.5), rows)] * 2, rel=1e-6)


def test_modal_cells_by_hand():
    maps = maps_peaking_at(
        [
            [(0, 1), None, (1, 0)],
            [(0, 1), None, None],
            [(2, 2), None, (2, 1)],
            [(0, 1), None, None],
        ]
    )
    cells, share = modal_cells(maps)
    # filter 0: (0, 1) on 3 of 4; filter 1 never fires; filter 2: a tie between (1, 0) and (2, 1) on its two
    # images, the first in row-major order wins (its silent images, argmax (0, 0), do not count)
    assert cells.tolist() == [[0, 1], list(NO_CELL), [1, 0]]
    assert share[0].item() == 0.75 and math.isnan(share[1]) and share[2].item() == 0.5


def test_frozen_twins_sit_at_the_modal_cells():
    # filter 0 peaks at (1, 1) on two of three images, filter 1 never fires: its twin has no cell, NaN
    cells, _ = modal_cells(maps_peaking_at([[(1, 1), None], [(0, 2), None], [(1, 1), None]]))
    twins = fixed_position_instability(cells, LANDMARKS, MAP, IMAGE)
    assert twins[0].item() == pytest.approx((math.sqrt(2) / DIAGONAL + 0.5 / DIAGONAL) / 2, rel=1e-6)
    assert math.isnan(twins[1])


def test_correlation_p_against_scipy():
    generator = torch.Generator().manual_seed(11)
    count = 40
    landmarks = torch.rand(count, 2, 2, generator=generator) * 20
    follower = landmarks[:, 0] + 6 * torch.randn(count, 2, generator=generator)  # follows landmark 0, noisily
    noise = 20 * torch.rand(count, 2, 2, generator=generator)
    constant_x = torch.stack([torch.full((count,), 2.1), noise[:, 1, 1]], dim=1)
    peaks = torch.stack([follower, noise[:, 0], noise[:, 1], constant_x], dim=1)  # [N, 4, 2]
    fires = torch.ones(count, 4, dtype=torch.bool)
    fires[:5, 0] = False
    fires[3:, 2] = False  # filter 2 fires on 3 images: 1 degree of freedom
    landmarks[7, 1] = NAN
    p = _correlation_p(peaks, fires, landmarks)
    for k in range(3):
        for landmark in range(2):
            for axis in range(2):
                kept = [n for n in range(count) if fires[n, k] and not landmarks[n, landmark].isnan().any()]
                xs = [peaks[n, k, axis].item() for n in kept]
                ys = [landmarks[n, landmark, axis].item() for n in kept]
                expected = pearsonr(xs, ys, alternative="greater").pvalue
                assert p[k, landmark, axis].item() == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert p[3, :, 0].tolist() == [1.0, 1.0]  # a constant series correlates with nothing
    assert p[0, 0].max() < MOVING_ALPHA  # the follower, against its landmark
    # 3 images: t with 1 degree of freedom is Cauchy, p = 1/2 - atan(t)/pi
    xs, ys = peaks[:3, 2, 0].tolist(), landmarks[:3, 0, 0].tolist()
    r = statistics.correlation(xs, ys)
    assert p[2, 0, 0].item() == pytest.approx(0.5 - math.atan(r / math.sqrt(1 - r * r)) / math.pi, rel=1e-9)


def oracle_moving(cells: list[list[tuple[int, int] | None]], landmarks: torch.Tensor, min_images: int) -> list:
    """Plain Python and scipy: per filter, 1.0 / 0.0 / NaN as moving_filters defines it (3×3 map, 6×6 image)."""
    verdicts: list[float] = []
    for k in range(len(cells[0])):
        firing = [n for n, row in enumerate(cells) if row[k] is not None]
        if len(firing) < min_images:
            verdicts.append(NAN)
            continue
        share = Counter(cells[n][k] for n in firing).most_common(1)[0][1] / len(firing)
        follows = False
        for landmark in range(landmarks.shape[1]):
            kept = [n for n in firing if not landmarks[n, landmark].isnan().any()]
            for axis in range(2):
                xs = [2 * cells[n][k][1 - axis] + 0.5 for n in kept]  # x from the column, y from the row
                ys = [landmarks[n, landmark, axis].item() for n in kept]
                if len(kept) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
                    p = pearsonr(xs, ys, alternative="greater").pvalue
                    follows |= bool(p < MOVING_ALPHA / (2 * landmarks.shape[1]))
        verdicts.append(float(share < STUCK_SHARE and follows))
    return verdicts


#: where the object is on each image: a walk over the 9 cells of the map
WALK = [((4 * n) % 9 // 3, (4 * n) % 9 % 3) for n in range(40)]


def test_moving_filters_against_an_oracle():
    count = 30
    walk = WALK[:count]
    landmarks = torch.tensor([[[2 * c + 0.5, 2 * r + 0.5], [2 * c + 1.0, 2 * r]] for r, c in walk])
    landmarks[::4, 1] = NAN
    generator = torch.Generator().manual_seed(5)
    cells: list[list[tuple[int, int] | None]] = [
        [
            (r, c),  # glued to the object: moving
            (2 - r, 2 - c),  # moves against the object: not moving
            tuple(torch.randint(3, (2,), generator=generator).tolist()),  # wanders at random
            (r, 0),  # follows in y only, constant in x: moving
            (r, 0) if n < 10 else ((4 * n + 7) % 9 // 3, 0),  # follows weakly: p < 0.05, but not after Bonferroni
            (r, c) if n < 5 else None,  # fires on 5 images: not judged
            None,  # never fires
        ]
        for n, (r, c) in enumerate(walk)
    ]
    weak_p = [  # filter 4's y against each landmark's y, where the landmark exists
        pearsonr(
            [2 * row[4][0] + 0.5 for row, point in zip(cells, landmarks[:, k]) if not point.isnan().any()],
            [point[1].item() for point in landmarks[:, k] if not point.isnan().any()],
            alternative="greater",
        ).pvalue
        for k in range(2)
    ]
    assert MOVING_ALPHA / 4 < min(weak_p) < MOVING_ALPHA  # the premise of filter 4
    verdict = moving_filters(maps_peaking_at(cells), landmarks, IMAGE, min_images=10)
    expected = oracle_moving(cells, landmarks, 10)
    assert verdict.tolist()[:5] == [1.0, 0.0, expected[2], 1.0, 0.0] == expected[:5]
    assert math.isnan(verdict[5]) and math.isnan(verdict[6]) and math.isnan(expected[5])


def test_a_filter_stuck_on_one_cell_does_not_move_even_when_it_follows():
    # on 40 images the object visits (2, 2) five times; a filter sits at (0, 0) except when it follows the object
    # there: on 4 visits it holds (0, 0) on 36 / 40 = STUCK_SHARE of its images (stuck), on 5 visits 35 / 40
    visits = [n for n, cell in enumerate(WALK) if cell == (2, 2)]
    landmarks = torch.tensor([[[2 * c + 0.5, 2 * r + 0.5]] for r, c in WALK])
    cells = [[(2, 2) if n in visits[:4] else (0, 0), (2, 2) if n in visits else (0, 0)] for n in range(len(WALK))]
    for k in range(2):  # both follow the object significantly
        xs = [2 * row[k][1] + 0.5 for row in cells]
        assert pearsonr(xs, landmarks[:, 0, 0].tolist(), alternative="greater").pvalue < MOVING_ALPHA / 2
    _, share = modal_cells(maps_peaking_at(cells))
    assert share.tolist() == [STUCK_SHARE, 35 / 40]
    assert moving_filters(maps_peaking_at(cells), landmarks, IMAGE).tolist() == [0.0, 1.0]


def test_distinct_peaks_by_hand():
    maps = maps_peaking_at(
        [
            [(1, 1), (1, 1), (2, 0), None],  # two cells; the silent filter's argmax (0, 0) is not one
            [None, None, None, None],
            [(0, 0), (0, 1), (2, 2), (1, 2)],
        ]
    )
    assert distinct_peaks(maps).tolist() == [2, 0, 4]


def test_filter_overlap_against_a_double_loop():
    generator = torch.Generator().manual_seed(2)
    maps = torch.relu(torch.randn(6, 5, 3, 4, generator=generator))
    maps[0, 1:] = 0  # one firing filter: NaN
    maps[1] = 0  # none
    maps[2, :3] = 0
    maps[3, 2] = -1.0  # below zero everywhere: silent
    expected = []
    for image in maps.tolist():
        firing = [sum(image[k], []) for k in range(len(image)) if max(sum(image[k], [])) > 0]
        cosines = [
            sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
            for i, u in enumerate(firing)
            for v in firing[i + 1 :]
        ]
        expected.append(sum(cosines) / len(cosines) if cosines else NAN)
    assert filter_overlap(maps).tolist() == pytest.approx(expected, abs=1e-6, nan_ok=True)
    # by hand: the same map scaled overlaps fully, disjoint maps not at all, [1, 0] and [1, 1] by 1/√2
    same = torch.tensor([[[[1.0, 2.0]], [[2.0, 4.0]]], [[[1.0, 0.0]], [[0.0, 3.0]]], [[[1.0, 0.0]], [[1.0, 1.0]]]])
    assert filter_overlap(same).tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)], abs=1e-6)
