"""``greater`` claims: one side above (or like) another, judged with the right replicates, and how robust the
verdict is (every random copy the claim lists, every reading of the metric).

A side (``higher:``, each of ``lower:``) is

* a variant of the metric's model: ``trained``, ``random[init=pytorch]`` (without a ``model:`` in the metric and
  with several models in the records, the records of that variant);
* a variant of any model of the suite, ``MODEL/VARIANT``: ``lenet_adv/trained``;
* a seed group the suite declares, ``random[seeds=20]`` (options in any order): K random networks.

How two sides are compared, at each judged layer (``layers: every``, ``deepest``,
``shallowest``, or ``curve``: each input's mean over the layers):

* two networks: their per-input values, paired (``test: wilcoxon`` or ``paired_t``) where both saw the same
  dataset and as many inputs, else Welch's unpaired t-test (the evidence says which);
* a network against a group, *networks as the replicates*: each network's value is its mean over the inputs;
  where the network falls among the K group networks is the exact rank p ``(1 + #{copies >= it}) / (K + 1)``
  that it is above them (``#{copies <= it}`` that it is below), with the gap in units of the copies' standard
  deviation. The smallest p K copies allow is ``1 / (K + 1)``: alpha 0.05 needs K >= 20, and the evidence says
  so when K is too small. The per-input test against each copy is kept in the
  details as *within-network (inputs as replicates)* evidence;
* two groups: Welch's t-test over the two sets of network values (networks as replicates).

``expect: higher`` agrees when every judged layer is significantly higher (an intersection-union test: each layer
at p < 0.05, unadjusted, the largest p the claim's), disagrees when one is significantly lower after Holm across
the layers. ``expect: same`` is an equivalence test (two one-sided tests, TOST) with ``margin``
(in the units of the reading; default 10 % of the chance level, the mean of the compared records' chance levels,
as :data:`repreval.leaderboard.NEAR_CHANCE`; a score without a chance level needs a stated margin): each side of
the TOST is the one-sided form of the claim's test, or, against a group, a t-test on the prediction interval of
the K networks (df K - 1). It agrees when every judged layer's TOST p is below 0.05 (intersection-union again),
disagrees when the difference is significant *and* equivalence fails, else is inconclusive: not significant is
not the same.

Identical networks (the same embedding signature, or the same per-input values) are counted once: within a
group, and among the ``lower`` entries, whose robustness checks leave the twins out (the evidence names them).
:attr:`Verdict.p` is the p the verdict rests on, for :mod:`repreval.findings` to correct across claims.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from statistics import fmean, stdev

from .analysis import SIGNIFICANCE, Robustness, Verdict, outcome, read_values, readings_of, selected
from .claims import split_side
from .config import MetricSelector
from .errors import ReprevalError
from .groups import canonical, is_group, members
from .leaderboard import NEAR_CHANCE
from .statistics import (
    PAIRED_TESTS,
    TESTS,
    compare,
    copies_needed,
    equivalence_p,
    holm,
    prediction_equivalence_p,
    prediction_p,
    rank_p,
)
from .store import ScoreRecord

#: Which probe layers a ``greater`` claim judges, as the report words it
_SCOPES = {"every": "each layer", "curve": "the curve", "deepest": "deepest layer", "shallowest": "shallowest layer"}
_OUTCOMES = {
    "higher": {"agrees": "higher", "disagrees": "lower", "inconclusive": "no significant difference"},
    "same": {"agrees": "equivalent", "disagrees": "different", "inconclusive": "neither shown"},
}
WITHIN = "within-network (inputs as replicates)"

Network = dict[str, ScoreRecord]  # layer -> the network's record there


@dataclass
class Side:
    """One side of a claim as the records have it: its networks (one, or a group's copies, each once)."""

    name: str  # as the claim writes it
    model: str | None  # the model it names (MODEL/VARIANT), else None
    group: bool
    networks: dict[str, Network]  # variant label -> its records by layer
    left_out: list[str] = field(default_factory=list)  # copies identical to one counted, or lacking layers

    def label(self, variant: str) -> str:
        """One of its networks as a claim would name it: ``variant``, or ``MODEL/variant``."""
        return f"{self.model}/{variant}" if self.model else variant


@dataclass
class Judged:
    """One judged layer (or the curve): the effect, what compared it, and the p-values a verdict reads."""

    layer: str
    difference: float  # higher minus lower: the per-input mean difference, or between the networks' means
    p: float  # the difference's: two-sided (per-input tests, Welch, prediction t) or the rank test's smaller tail
    direction: int  # +1: higher is above, -1: below, 0: neither
    text: str  # the values and the test, p unadjusted
    p_same: float | None = None  # the TOST p (expect: same with a margin)
    p_adjusted: float | None = None  # Holm across the judged layers
    p_same_adjusted: float | None = None
    within: str = ""  # the per-input tests against each copy of a group

    @property
    def p_used(self) -> float:
        """The difference's p, Holm-adjusted where the claim judges several layers."""
        return self.p if self.p_adjusted is None else self.p_adjusted

    @property
    def p_same_used(self) -> float | None:
        """The TOST p, Holm-adjusted where the claim judges several layers."""
        return self.p_same if self.p_same_adjusted is None else self.p_same_adjusted

    def outcome(self, expect: str) -> str:
        """This layer's verdict: ``expect: higher``: agrees when significantly higher, disagrees when
        significantly lower; ``same``: agrees when equivalent, disagrees when different and not equivalent.

        Agreement needs every judged layer to pass, an intersection-union test: each layer at alpha, unadjusted
        (the largest p is the claim's). Disagreement needs one layer to fail: Holm across the layers."""
        different = self.p_used < SIGNIFICANCE
        if expect == "same":
            if self.p_same is not None and self.p_same < SIGNIFICANCE:
                return "agrees"
            return "disagrees" if different and self.p_same is not None else "inconclusive"
        if self.direction > 0 and self.p < SIGNIFICANCE:
            return "agrees"
        return "disagrees" if self.direction < 0 and different else "inconclusive"

    def describe(self) -> str:
        """The values, the test and its p (with Holm's where adjusted), the TOST p where there is one."""
        text = self.text + (f" (Holm {self.p_adjusted:.2g})" if self.p_adjusted is not None else "")
        if self.p_same is not None:
            holm_same = f" (Holm {self.p_same_adjusted:.2g})" if self.p_same_adjusted is not None else ""
            text += f"; TOST p = {self.p_same:.2g}{holm_same}"
        return text


@dataclass
class Judgement:
    """Two sides compared under one reading: how, each judged layer, and the verdict with the p it rests on."""

    method: str  # the test, as the evidence names it
    judged: list[Judged]
    expect: str
    margin: float | None  # the equivalence margin (expect: same), in the units of the reading
    copies: int = 0  # K, where one side is a group

    @property
    def effects(self) -> tuple[list[float], list[float]]:
        """Each judged layer's difference, and the p its verdict reads (the TOST's for ``same``, where tested)."""
        same = self.expect == "same"
        ps = [j.p_same_used if same and j.p_same_used is not None else j.p_used for j in self.judged]
        return [j.difference for j in self.judged], ps

    @property
    def outcomes(self) -> list[str]:
        """Each judged layer's verdict."""
        return [j.outcome(self.expect) for j in self.judged]

    @property
    def verdict(self) -> str:
        """Agrees when every judged layer agrees, disagrees when one disagrees, else inconclusive."""
        outcomes = self.outcomes
        if outcomes and all(o == "agrees" for o in outcomes):
            return "agrees"
        return "disagrees" if "disagrees" in outcomes else "inconclusive"

    @property
    def p(self) -> float | None:
        """The p the verdict rests on: agrees, the largest judged p (unadjusted: see :meth:`Judged.outcome`; the
        TOST's for ``same``);
        disagrees, the smallest p of a disagreeing layer; inconclusive, the smallest p seen."""
        same = self.expect == "same"
        verdict = self.verdict
        if verdict == "agrees":  # intersection-union: the largest unadjusted p
            return max(j.p if not same else j.p_same or 0.0 for j in self.judged)
        if verdict == "disagrees":
            return min(j.p_used for j, o in zip(self.judged, self.outcomes) if o == "disagrees")
        seen = [p for j in self.judged for p in (j.p_used, j.p_same_used) if p is not None and not math.isnan(p)]
        return min(seen) if seen else None


# ---------------------------------------------------------------------------------------------
# Sides and their networks


def side(records: list[ScoreRecord], selector: MetricSelector, name: str) -> Side:
    """The networks ``name`` (a variant, ``MODEL/VARIANT`` or a seed group) stands for among ``records``, the
    metric's records of that model (the metric's ``model:`` unless the side names one); a group's copies that
    are identical to one before them, or lack a layer the others have, are left out."""
    model, variant = split_side(name)
    group = is_group(variant)
    wanted = members(canonical(variant)) if group else [variant]
    chosen = replace(selector, model=model or selector.model, variant=None)
    found: dict[str, Network] = defaultdict(dict)
    for record in selected(records, chosen):
        if record.variant in wanted:
            found[record.variant][record.layer] = record
    result = Side(name, model, group, {label: found[label] for label in wanted if label in found})
    if group:
        everywhere = set().union(*result.networks.values())
        for label, network in list(result.networks.items()):
            if set(network) != everywhere:
                result.left_out.append(f"{label} (lacks {', '.join(sorted(everywhere - set(network)))})")
                del result.networks[label]
        result.networks, twins = distinct(result.networks, {})
        result.left_out += twins
    return result


def identical(a: Network, b: Network) -> bool:
    """Whether two networks are one: the same embedding signature, or the same per-input values and chance
    levels at every layer both have. Constant ones do not count: two dead networks (an all-zero embedding, every
    score 0) are two draws that happen to fail alike, not one network counted twice."""
    signature_a = next((r.embedding_signature for r in a.values() if r.embedding_signature), None)
    signature_b = next((r.embedding_signature for r in b.values() if r.embedding_signature), None)
    if signature_a and signature_b and len(set(signature_a)) > 1 and _close(signature_a, signature_b):
        return True
    common = a.keys() & b.keys()
    return bool(common) and all(
        _close(a[layer].values, b[layer].values)
        and _close(a[layer].reference_values, b[layer].reference_values)
        and len(set(a[layer].values)) > 1
        for layer in common
    )


def _close(a: list[float], b: list[float]) -> bool:
    """Equal within 1e-5 of each value's size (at least 1), element by element, stopping at the first gap."""
    return len(a) == len(b) and all(abs(u - v) <= 1e-5 * max(1.0, abs(u)) for u, v in zip(a, b))


def distinct(networks: dict[str, Network], counted: dict[str, Network]) -> tuple[dict[str, Network], list[str]]:
    """``networks`` without those identical to one counted before them (``counted``, then the kept ones), and
    the left-out ones as ``random[seed=3] (= random[seed=0])``."""
    kept: dict[str, Network] = {}
    left_out = []
    for label, network in networks.items():
        twin = next((other for other, o in (counted | kept).items() if identical(network, o)), None)
        if twin is None:
            kept[label] = network
        else:
            left_out.append(f"{label} (= {twin})")
    return kept, left_out


def _lower_sides(
    records: list[ScoreRecord], selector: MetricSelector, names: list[str]
) -> tuple[list[Side], list[str]]:
    """The ``lower`` entries as sides, each network counted once: an entry that is a network identical to one
    of an earlier entry is left out; and what was left out, for the evidence."""
    sides: list[Side] = []
    counted: dict[str, Network] = {}
    notes = []
    for name in names:
        one = side(records, selector, name)
        networks = {one.label(label): network for label, network in one.networks.items()}
        if not networks and sides:
            notes.append(f"{name} (no results)")
            continue
        if not one.group and networks:
            networks, twins = distinct(networks, counted)
            if twins:
                notes += twins
                continue
        counted |= networks
        notes += [f"{label} of {name}" for label in one.left_out]
        sides.append(one)
    return sides, notes


# ---------------------------------------------------------------------------------------------
# Judging


def _judged_layers(higher: Side, lower: Side, layers: str) -> list[tuple[str, list[str]]]:
    """(name, layers) of each judged unit: each layer every network of both sides has (shallowest first), the
    deepest or shallowest of them, or ``curve`` (all of them)."""
    networks = [*higher.networks.values(), *lower.networks.values()]
    if not higher.networks or not lower.networks:
        return []
    common = set.intersection(*(set(network) for network in networks))
    depth = {layer: record.layer_index for network in networks for layer, record in network.items()}
    ordered = sorted(common, key=lambda layer: (depth[layer], layer))
    if not ordered:
        return []
    if layers == "curve":
        return [("curve", ordered)]
    if layers == "deepest":
        ordered = ordered[-1:]
    elif layers == "shallowest":
        ordered = ordered[:1]
    return [(layer, [layer]) for layer in ordered]


def _per_input(network: Network, layers: list[str], reading: str) -> list[float]:
    """The network's per-input values at ``layers`` (their mean over the layers, per input) as ``reading`` reads
    them."""
    columns = [read_values(network[layer], reading) for layer in layers]
    if len(columns) == 1:
        return columns[0]
    if any(len(column) != len(columns[0]) for column in columns):
        raise ReprevalError("the layers were scored on different inputs", fix="use layers: every")
    return [fmean(values) for values in zip(*columns)]


def _pairs(a: Network, b: Network, layers: list[str]) -> bool:
    """Whether two networks' values pair input by input: the same dataset and as many inputs at each layer."""
    return all(
        a[layer].dataset == b[layer].dataset and len(a[layer].values) == len(b[layer].values) for layer in layers
    )


def _chance(sides: list[Side], layers: list[str]) -> float | None:
    """The mean chance level of the compared records (None when one has none)."""
    records = [network[layer] for one in sides for network in one.networks.values() for layer in layers]
    if not records or any(record.reference is None for record in records):
        return None
    return fmean(record.reference for record in records if record.reference is not None)


def margin_for(stated: float | None, stated_reading: str, reading: str, chance: float | None) -> float | None:
    """The equivalence margin under ``reading``: ``stated`` (in ``stated_reading``'s units) converted, or
    :data:`NEAR_CHANCE` of the chance level; None when there is neither."""
    if chance is None or chance == 0:
        return stated if stated is not None and stated_reading == reading else None
    absolute = (
        NEAR_CHANCE * abs(chance) if stated is None else stated * (chance if stated_reading == "over_chance" else 1)
    )
    return absolute / chance if reading == "over_chance" else absolute


def judge(
    higher: Side,
    lower: Side,
    layers: str,
    expect: str,
    *,
    test: str = "wilcoxon",
    reading: str = "raw",
    stated: tuple[float | None, str] = (None, "raw"),
    seed: int = 0,
    within: bool = False,
) -> Judgement:
    """Compare ``higher`` with ``lower`` at the ``layers`` judged, under ``reading``, as the module doc says.
    ``stated``: the equivalence margin a claim states (None: the default) and the reading it is stated in
    (``expect: same``); ``within``: add the per-input tests against each copy of a group."""
    units = _judged_layers(higher, lower, layers)
    chance = _chance([higher, lower], [layer for _, names in units for layer in names])
    margin = margin_for(*stated, reading, chance) if expect == "same" else None
    if higher.group and lower.group:
        method, judged = _groups(higher, lower, units, reading, expect, margin, seed)
    elif higher.group or lower.group:
        method, judged = _network_in_group(higher, lower, units, reading, expect, margin, test, seed, within)
    else:
        method, judged = _two_networks(higher, lower, units, reading, expect, margin, test, seed)
    if len(judged) > 1:
        for values, key in ((holm([j.p for j in judged]), "p_adjusted"), (_holm_same(judged), "p_same_adjusted")):
            for one, value in zip(judged, values):
                setattr(one, key, value)
    copies = len((lower if lower.group else higher).networks) if higher.group != lower.group else 0
    return Judgement(method, judged, expect, margin, copies)


def _holm_same(judged: list[Judged]) -> list[float | None]:
    if any(j.p_same is None for j in judged):
        return [None] * len(judged)
    return list(holm([j.p_same for j in judged if j.p_same is not None]))


def _two_networks(higher, lower, units, reading, expect, margin, test, seed) -> tuple[str, list[Judged]]:
    """Per-input values of two networks: paired where they pair, else Welch's t-test."""
    ((_, a),), ((_, b),) = higher.networks.items(), lower.networks.items()
    used = test if test in PAIRED_TESTS and all(_pairs(a, b, names) for _, names in units) else "welch"
    method = TESTS[used] + (", as the values do not pair (different inputs)" if used != test else "")
    judged = []
    for name, names in units:
        x, y = _per_input(a, names, reading), _per_input(b, names, reading)
        c = compare(x, y, used, seed)
        same = max(equivalence_p(x, y, used, margin)) if expect == "same" and margin is not None else None
        text = f"{c.mean_a:.4f} vs {c.mean_b:.4f}, {c.describe()}"
        judged.append(Judged(name, c.difference, c.p, c.direction, text, same))
    return method, judged


def _groups(higher, lower, units, reading, expect, margin, seed) -> tuple[str, list[Judged]]:
    """Two groups: Welch's t-test over the two sets of network values."""
    judged = []
    for name, names in units:
        x = [fmean(_per_input(n, names, reading)) for n in higher.networks.values()]
        y = [fmean(_per_input(n, names, reading)) for n in lower.networks.values()]
        c = compare(x, y, "welch", seed)
        same = max(equivalence_p(x, y, "welch", margin)) if expect == "same" and margin is not None else None
        text = f"networks {c.mean_a:.4f} vs {c.mean_b:.4f} ({len(x)} and {len(y)} networks), {c.describe()}"
        judged.append(Judged(name, c.difference, c.p, c.direction, text, same))
    return "Welch t over networks, networks as replicates", judged


def _network_in_group(higher, lower, units, reading, expect, margin, test, seed, within) -> tuple[str, list[Judged]]:
    """One network against a group's K networks, each network's value its mean over the inputs (see
    :func:`_place`); the per-input tests against each copy as within-network evidence."""
    group, single = (lower, higher) if lower.group else (higher, lower)
    sign = 1 if lower.group else -1  # higher minus lower = sign * (network - group)
    ((_, network),) = single.networks.items()
    judged = []
    for name, names in units:
        inputs = _per_input(network, names, reading)
        others = [fmean(_per_input(n, names, reading)) for n in group.networks.values()]
        judged.append(_place(name, fmean(inputs), others, sign, expect, margin))
        if within:
            judged[-1].within = _within(inputs, network, group, names, reading, test, seed, sign)
    test_name = "prediction t" if expect == "same" else "rank"
    return f"{test_name} among {len(group.networks)} networks, networks as replicates", judged


def _place(layer: str, value: float, others: list[float], sign: int, expect: str, margin: float | None) -> Judged:
    """Where one network's ``value`` falls among K networks' ``others`` (``sign``: +1 when the network is the
    claim's higher side). ``expect: higher``: the exact rank p of each direction, the smaller one judged;
    ``same``: the two-sided prediction-interval t-test, and its TOST with ``margin``."""
    above, below = rank_p(value, others)
    agree, disagree = (above, below) if sign > 0 else (below, above)
    mean = fmean(others)
    sd = stdev(others) if len(others) > 1 else math.nan
    gap = (value - mean) / sd if sd else math.nan
    text = (
        f"{value:.4f} vs {len(others)} networks {mean:.4f} ± {sd:.4f} (SD), gap {gap:+.2f} SD, "
        f"rank p = {agree:.2g} (higher), {disagree:.2g} (lower)"
    )
    direction = (agree < disagree) - (agree > disagree)
    if expect != "same":
        return Judged(layer, sign * (value - mean), min(agree, disagree), direction, text)
    p = prediction_p(value, others)
    same = max(prediction_equivalence_p(value, others, margin)) if margin is not None else None
    return Judged(layer, sign * (value - mean), p, direction, f"{text}, prediction t p = {p:.2g}", same)


def _within(inputs, network, group, names, reading, test, seed, sign) -> str:
    """The per-input test of the network against each copy of the group, summarised."""
    outcomes, ps, used = [], [], test
    for copy in group.networks.values():
        used = test if test in PAIRED_TESTS and _pairs(network, copy, names) else "welch"
        theirs = _per_input(copy, names, reading)
        c = compare(inputs, theirs, used, seed) if sign > 0 else compare(theirs, inputs, used, seed)
        outcomes.append(_OUTCOMES["higher"][outcome(c)])
        ps.append(c.p)
    shown = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    return f"against each of {len(ps)} copies, {TESTS[used]}: {shown} (p {min(ps):.2g} to {max(ps):.2g}, unadjusted)"


# ---------------------------------------------------------------------------------------------
# The claim


def check_greater(
    records: list[ScoreRecord],
    selector: MetricSelector,
    higher: str,
    lower: str | list[str],
    layers: str,
    expect: str = "higher",
    *,
    test: str = "wilcoxon",
    readings: list[str] | None = None,
    margin: float | None = None,
    seed: int = 0,
) -> Verdict:
    """Is ``higher`` above (``expect: higher``) or like (``same``, within ``margin``) ``lower``? See the module
    doc. ``lower`` may list several sides: the first decides the verdict (under the selector's reading); every
    other one that is not identical to a network already counted, under every reading in ``readings`` (default:
    all the records have), is checked too, and the verdict is robust when they all agree with it."""
    names = [lower] if isinstance(lower, str) else list(lower)
    top = side(records, selector, higher)
    lowers, left_out = _lower_sides(records, selector, names)
    claim = Verdict("", "", "inconclusive", f"no results for both {higher} and {names[0]}")
    if not top.networks or not lowers or not lowers[0].networks:
        return claim
    stated = (margin, selector.reading)
    primary = judge(top, lowers[0], layers, expect, test=test, reading=selector.reading, stated=stated, seed=seed,
                    within=True)  # fmt: skip
    if not primary.judged:
        return claim
    claim.verdict, claim.p = primary.verdict, primary.p
    claim.evidence = _evidence(primary, higher, lowers[0].name, layers, selector.reading, margin, left_out, top)
    claim.details = [f"{j.layer}: {j.describe()}" for j in primary.judged]
    claim.details += [f"{WITHIN}, {j.layer}: {j.within}" for j in primary.judged if j.within]
    compared = [r for one in (top, *lowers) for network in one.networks.values() for r in network.values()]
    for other in lowers:
        for reading in readings or readings_of(compared):
            again = judge(top, other, layers, expect, test=test, reading=reading, stated=stated, seed=seed)
            if again.judged:
                claim.checks.append(Robustness(other.name, reading, again.verdict, *again.effects))
    return claim


def _evidence(
    judgement: Judgement,
    higher: str,
    lower: str,
    layers: str,
    reading: str,
    stated: float | None,
    left_out: list[str],
    top: Side,
) -> str:
    """The claim's evidence: what was compared, how, the outcome per judged layer (or the one layer's numbers),
    the equivalence margin, what K copies allow, and what was left out."""
    outcomes = [_OUTCOMES[judgement.expect][o] for o in judgement.outcomes]
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    if len(judgement.judged) == 1:
        counts += f"; {judgement.judged[0].describe()}"
    shown = "" if reading == "raw" else f", {reading.replace('_', ' ')}"
    parts = [f"{higher} vs {lower} ({_SCOPES[layers]}{shown}, {judgement.method}): {counts}"]
    if judgement.expect == "same":
        parts.append(_margin_text(judgement.margin, stated))
    if judgement.copies and judgement.expect != "same":
        parts.append(_copies_text(judgement.copies))
    notes = [f"{label} of {top.name}" for label in top.left_out]
    if notes or left_out:
        parts.append("left out: " + ", ".join([*notes, *left_out]))
    return "; ".join(parts)


def _margin_text(margin: float | None, stated: float | None) -> str:
    if margin is None:
        return "state margin: to test equivalence (the score has no chance level to take 10 % of)"
    source = "stated" if stated is not None else f"{NEAR_CHANCE:.0%} of the chance level"
    return f"equivalence margin ±{margin:.4g} ({source})"


def _copies_text(copies: int) -> str:
    """What ``copies`` networks allow a rank test: its smallest p (agreement at every judged layer needs no
    correction, see :meth:`Judged.outcome`), and how many alpha 0.05 needs when they are too few."""
    smallest = 1 / (copies + 1)
    text = f"the smallest p {copies} copies allow: {smallest:.2g}"
    if smallest >= SIGNIFICANCE:
        text += (
            f"; alpha {SIGNIFICANCE:g} needs at least {copies_needed(SIGNIFICANCE, 1)} copies: "
            "the verdict cannot be better than inconclusive"
        )
    return text
