"""How sure a board's ranking is: a seeded percentile bootstrap of each row's value and of every pair's difference.

A row's value is a mean over inputs of its per-input curve means (the mean over the row's layers of the records'
per-input values); a seed group's is the mean of that over its networks. One resample draws the inputs with
replacement (and, for a group, first its networks): the *same* input draws for every row that saw the same inputs,
so a difference between two such rows is paired; rows on other inputs get independent draws. All rows' resamples
come from one matrix (rows × resamples), so the intervals of the ``R (R - 1) / 2`` differences cost one subtraction
each.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from .statistics import CONFIDENCE, RESAMPLES

#: Percentiles of the interval (95 %: 2.5 and 97.5)
_TAILS = (50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE))
#: A difference this close to 0 is 0 (equal rows summed in another order differ by rounding only)
_ROUNDING = 1e-12


@dataclass
class Source:
    """What one row's value is the mean of: ``per_input`` (inputs × networks: one column for a single network)
    on the input set ``inputs`` (rows with equal keys saw the same inputs, in the same order)."""

    inputs: Hashable
    per_input: np.ndarray

    @property
    def varies(self) -> bool:
        """Whether resampling can move the value (two inputs or two networks at least)."""
        return self.per_input.shape[0] > 1 or self.per_input.shape[1] > 1


def _stream(seed: int, *keys: object) -> np.random.Generator:
    """A generator for ``seed`` and ``keys`` that does not depend on the order rows or boards come in."""
    return np.random.default_rng([seed, *(zlib.crc32(repr(key).encode()) for key in keys)])


def _counts(n: int, generator: np.random.Generator, resamples: int) -> np.ndarray:
    """``resamples`` × ``n``: how often each of ``n`` items is drawn in each resample (n draws with replacement)."""
    draws = generator.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


class Resampler:
    """Resamples of row values for one seed: input draws are made once per input set and reused, so every row on
    the same inputs (on every board built with this resampler) is resampled with the same draws."""

    def __init__(self, seed: int, resamples: int = RESAMPLES):
        self.seed, self.resamples = seed, resamples
        self._inputs: dict[Hashable, np.ndarray] = {}

    def inputs(self, key: Hashable, n: int) -> np.ndarray:
        """The input draws (resamples × n counts) of the input set ``key``."""
        if (key, n) not in self._inputs:
            self._inputs[key, n] = _counts(n, _stream(self.seed, "inputs", key, n), self.resamples)
        return self._inputs[key, n]

    def values(self, sources: list[Source | None], names: list[str], points: list[float]) -> np.ndarray:
        """rows × resamples: each row's resampled value (networks, then inputs, hierarchically); a row without a
        source (no per-input values) keeps its point value in every resample."""
        result = np.tile(np.asarray(points, dtype=float)[:, None], (1, self.resamples))
        by_inputs: dict[tuple[Hashable, int], list[int]] = {}
        for row, source in enumerate(sources):
            if source is not None:
                by_inputs.setdefault((source.inputs, source.per_input.shape[0]), []).append(row)
        for (key, n), rows in by_inputs.items():
            stacked = np.hstack([sources[row].per_input for row in rows])  # type: ignore[union-attr]
            means = self.inputs(key, n) @ stacked / n  # resamples × every network of these rows
            start = 0
            for row in rows:
                networks = sources[row].per_input.shape[1]  # type: ignore[union-attr]
                block = means[:, start : start + networks]
                start += networks
                if networks == 1:
                    result[row] = block[:, 0]
                else:  # a seed group: its networks drawn with replacement too
                    weights = _counts(networks, _stream(self.seed, "networks", names[row]), self.resamples)
                    result[row] = (block * weights).sum(axis=1) / networks
        return result


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The percentile interval (95 %) of one row's resamples."""
    low, high = np.percentile(samples, _TAILS)
    return float(low), float(high)


def ties(samples: np.ndarray, varies: list[bool]) -> list[list[int]]:
    """For each row, the rows it cannot be told apart from: the 95 % interval of the resampled difference holds
    0. Two rows that neither vary (one value each, nothing to resample) are never called tied."""
    tied: list[list[int]] = []
    for row in range(samples.shape[0]):
        low, high = np.percentile(samples[row] - samples, _TAILS, axis=1)
        holds_zero = (low <= _ROUNDING) & (high >= -_ROUNDING)
        tied.append(
            [other for other in np.flatnonzero(holds_zero).tolist() if other != row and (varies[row] or varies[other])]
        )
    return tied
