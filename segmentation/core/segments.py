"""Keeping segment meaning stable across retrains, naming segments, and measuring drift.

KMeans numbers its clusters arbitrarily on every fit (scikit-learn issue 20216), so a
dashboard filtered on "segment 3" would silently change meaning overnight. New centroids are
matched to the previous published run's centroids (Hungarian assignment on distances in the
new run's standardised space) and inherit their ids; a centroid with no match close enough
gets an id never used before."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from segmentation.core.feature_plan import FeaturePlan


@dataclass(frozen=True)
class Matching:
    segment_ids: np.ndarray  # segment id for each new centroid, by KMeans label
    shifts: np.ndarray  # distance to the matched previous centroid (NaN when new)


def match_segments(
    new_centers: np.ndarray,
    previous_centers: np.ndarray | None,
    previous_ids: Sequence[int] | np.ndarray | None,
    *,
    max_shift: float,
    next_id: int,
) -> Matching:
    """Ids for the new centroids. All centers in the same (standardised) space.

    A pair further apart than max_shift is not a match: that new centroid gets a fresh id,
    numbered from next_id up, in label order so the result is deterministic."""
    k = len(new_centers)
    ids = np.full(k, -1, dtype=np.int64)
    shifts = np.full(k, np.nan)
    if previous_centers is not None and previous_ids is not None and len(previous_centers):
        cost = np.sqrt(((new_centers[:, None, :] - previous_centers[None, :, :]) ** 2).sum(axis=2))
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if cost[r, c] <= max_shift:
                ids[r] = previous_ids[c]
                shifts[r] = cost[r, c]
    for r in range(k):
        if ids[r] < 0:
            ids[r] = next_id
            next_id += 1
    return Matching(ids, shifts)


_WORDS = {"annual_income": "income", "spending_score": "spending", "age": "age"}
_AGE_BANDS = ((30, "under 30"), (45, "30-44"), (60, "45-59"))


def _level(z: float) -> str:
    """Distance from the population mean in standard deviations, in words."""
    for limit, word in ((-1.5, "Very low"), (-0.5, "Low"), (0.5, "Average"), (1.5, "High")):
        if z < limit:
            return word
    return "Very high"


def _age_band(age: float) -> str:
    for limit, band in _AGE_BANDS:
        if age < limit:
            return f"Age {band}"
    return "Age 60+"


# A segment that keeps its id keeps its name while the name still describes it: while each of the
# name's words would still be chosen with the centroid moved by up to this much (standard
# deviations of a number; the share of a level or of women; years of age). Without it a centroid
# near a boundary flips its name from night to night ("Low income" one night, "Average income" the
# next, for a move of 0.04), and a chart by name splits into one-point series.
NAME_SLACK_SD = 0.25
NAME_SLACK_SHARE = 0.05
NAME_SLACK_YEARS = 2.0
_SUFFIX = re.compile(r" \(\d+\)$")  # the numeric suffix that makes a name unique within a run


def segment_name(features: Sequence[str], z: np.ndarray, original: np.ndarray) -> str:
    """A readable name from a centroid relative to the population: `z` is the centroid in
    standardised units (0 = population mean), `original` in original units."""
    return _join([sorted(words)[0] for words in _simple_parts(features, z, original, slack=False)])


def _simple_parts(features: Sequence[str], z: np.ndarray, original: np.ndarray, *, slack: bool) -> list[set[str]]:
    """The name's parts, each as the words it may take (one without slack; "" for a part left out)."""
    parts: list[set[str]] = []
    for feature, zj, xj in zip(features, z, original):
        if feature == "age":
            continue  # an age band says more than "High age"
        if feature == "gender":
            parts.append(_around(float(xj), NAME_SLACK_SHARE, slack, _gender_words))
            continue
        words = _WORDS.get(feature, feature.replace("_", " "))
        parts.append(_around(float(zj), NAME_SLACK_SD, slack, lambda v, w=words: f"{_level(v)} {w}"))
    if "age" in features:
        parts.append(_around(float(original[list(features).index("age")]), NAME_SLACK_YEARS, slack, _age_band))
    return parts


def _around(value: float, slack_by: float, slack: bool, words) -> set[str]:
    """The words for value, and with slack those for value moved down and up by slack_by."""
    if not slack:
        return {words(value)}
    return {words(value - slack_by), words(value), words(value + slack_by)}


def _gender_words(x: float) -> str:
    return "Mostly women" if x >= 0.6 else "Mostly men" if x <= 0.4 else "Mixed gender"


def _join(parts: Sequence[str]) -> str:
    return " · ".join(p for p in parts if p)


def segment_names(plan: FeaturePlan, centers_z: np.ndarray, centers_inputs: np.ndarray) -> list[str]:
    """One name per centroid, made unique within the run with a numeric suffix. centers_z: in
    standard deviations from the population mean (weights undone); centers_inputs: in the
    model's input units. Bare column names are named as they always were."""
    if plan.simple:
        names = [segment_name(list(plan.columns), z, x) for z, x in zip(centers_z, centers_inputs)]
    else:
        names = [_name_from_plan(plan, z, x) for z, x in zip(centers_z, centers_inputs)]
    return _unique(names)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name} ({seen[name]})")
    return unique


def names_describing(plan: FeaturePlan, z: np.ndarray, inputs: np.ndarray) -> set[str]:
    """Every name a centroid would get with each feature moved by up to its slack (NAME_SLACK_*):
    the names that still describe it."""
    parts = (
        _simple_parts(list(plan.columns), z, inputs, slack=True)
        if plan.simple
        else _plan_parts(plan, z, inputs, slack=True)
    )
    names = {_join(combination) for combination in itertools.product(*(sorted(p) for p in parts))}
    return {name or "Typical customers" for name in names}


def stable_names(
    plan: FeaturePlan,
    centers_z: np.ndarray,
    centers_inputs: np.ndarray,
    segment_ids: Sequence[int] | np.ndarray,
    previous_names: dict[int, str],
) -> list[str]:
    """segment_names, except that a segment keeping its id from the previous run keeps that run's
    name while it still describes the segment (names_describing)."""
    fresh = segment_names(plan, centers_z, centers_inputs)
    names = []
    for j, segment_id in enumerate(segment_ids):
        before = previous_names.get(int(segment_id))
        base = None if before is None else _SUFFIX.sub("", before)
        if base is not None and base in names_describing(plan, centers_z[j], centers_inputs[j]):
            names.append(base)
        else:
            names.append(_SUFFIX.sub("", fresh[j]))
    return _unique(names)


def _name_from_plan(plan: FeaturePlan, z: np.ndarray, inputs: np.ndarray) -> str:
    return _join([sorted(words)[0] for words in _plan_parts(plan, z, inputs, slack=False)]) or "Typical customers"


def _plan_parts(plan: FeaturePlan, z: np.ndarray, inputs: np.ndarray, *, slack: bool) -> list[set[str]]:
    """The name's parts from a plan, each as the words it may take (see _simple_parts)."""
    parts: list[set[str]] = []
    ages: list[set[str]] = []
    for index, feature in enumerate(plan.features):
        spec = feature.spec
        columns = [j for j, i in enumerate(plan.inputs) if i.feature == index]
        if spec.kind == "category":
            shares = {"other" if plan.inputs[j].other else plan.inputs[j].level: float(inputs[j]) for j in columns}
            if shares:
                parts.append(_category_words(shares, spec.words, NAME_SLACK_SHARE if slack else 0.0))
            continue
        j = columns[0]
        if spec.plain and spec.column == "age":
            ages.append(_around(float(inputs[j]), NAME_SLACK_YEARS, slack, _age_band))
        elif feature.gender_rule:
            parts.append(_around(float(inputs[j]), NAME_SLACK_SHARE, slack, _gender_words))
        else:
            parts.append(
                _around(
                    float(z[j]),
                    NAME_SLACK_SD,
                    slack,
                    lambda v, s=spec: _level_words(v, s.words, s.low_end, s.high_end),
                )
            )
    return parts + ages


def _category_words(shares: dict[str | None, float], words: str, slack: float) -> set[str]:
    """ "Mostly <level> <words>" for the level most customers of the segment have, when at least
    half do; with slack, any level within slack of both, and nothing when the most is within
    slack of half."""
    level, most = max(shares.items(), key=lambda item: item[1])
    if not slack:
        return {f"Mostly {level} {words}" if most >= 0.5 else ""}
    found = {f"Mostly {name} {words}" for name, share in shares.items() if share >= max(0.5, most) - slack}
    if most < 0.5 + slack:
        found.add("")
    return found


def _level_words(z: float, words: str, low: str | None, high: str | None) -> str:
    """The level in words: the feature's own words for its ends where it has them ("Recent",
    "Very lapsed"), else "Low income"."""
    level = _level(z)
    end = low if level in ("Very low", "Low") else high if level in ("High", "Very high") else None
    if end is None:
        return f"{level} {words}"
    return f"Very {end[:1].lower()}{end[1:]}" if level.startswith("Very") else end


def adjusted_rand_index(contingency: np.ndarray) -> float:
    """ARI from the contingency table of two labelings (Hubert and Arabie, 1985)."""
    table = np.asarray(contingency, dtype=np.float64)
    n = table.sum()
    if n < 2:
        return 1.0

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    index = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(np.array([n]))
    maximum = (rows + cols) / 2
    if maximum == expected:  # both labelings put everyone in one cluster, or identical trivial ones
        return 1.0
    return float((index - expected) / (maximum - expected))


@dataclass(frozen=True)
class Comparison:
    """Two runs' assignments compared customer by customer."""

    customers_compared: int  # in both runs
    customers_changed: int  # of those, in another segment now
    churn: float | None
    adjusted_rand_index: float | None
    customers_added: int  # in the new run only
    customers_removed: int  # in the old run only


def compare_from_changes(
    changes: Sequence[tuple[int | None, int | None, int]], old_sizes: dict[int, int]
) -> Comparison:
    """The comparison from only the customers who changed: counts per (segment before, segment
    now), None for a customer in one run only, and the old run's segment sizes. Those who
    stayed in a segment are its old size less those who left it."""
    cells: dict[tuple[int | None, int | None], int] = {(o, n): int(c) for o, n, c in changes if o != n}
    for segment, size in old_sizes.items():
        stayed = size - sum(c for (o, _), c in cells.items() if o == segment)
        if stayed < 0:
            raise ValueError(f"segment {segment}: more customers left it than it had ({size})")
        if stayed:
            cells[(segment, segment)] = stayed
    added = sum(c for (o, _), c in cells.items() if o is None)
    removed = sum(c for (_, n), c in cells.items() if n is None)
    both = {(o, n): c for (o, n), c in cells.items() if o is not None and n is not None}
    compared = sum(both.values())
    changed = sum(c for (o, n), c in both.items() if o != n)
    ari = None
    if compared:
        olds = sorted({o for o, _ in both})
        news = sorted({n for _, n in both})
        table = np.zeros((len(olds), len(news)))
        for (o, n), c in both.items():
            table[olds.index(o), news.index(n)] = c
        ari = adjusted_rand_index(table)
    return Comparison(compared, changed, changed / compared if compared else None, ari, added, removed)


@dataclass(frozen=True)
class QualityGate:
    min_silhouette: float
    min_segment_share: float
    max_customer_drop: float
    max_quarantined_share: float
    max_feature_drift: float | None = None  # PSI; None: not checked


def quality_issues(
    gate: QualityGate,
    *,
    silhouette: float | None,
    shares: dict[int, float],
    n_customers: int,
    previous_n_customers: int | None,
    n_quarantined: int,
    feature_drift: dict[str, float] | None = None,
) -> list[str]:
    """Why this run should not replace the current one; empty when it may. feature_drift: each
    feature's PSI against the previous published run."""
    issues = []
    if silhouette is not None and silhouette < gate.min_silhouette:
        issues.append(f"silhouette {silhouette:.3f} is below the minimum {gate.min_silhouette:g}")
    for segment_id, share in sorted(shares.items()):
        if share < gate.min_segment_share:
            issues.append(
                f"segment {segment_id} holds {share:.2%} of customers, below the minimum {gate.min_segment_share:.2%}"
            )
    if previous_n_customers:
        drop = 1 - n_customers / previous_n_customers
        if drop > gate.max_customer_drop:
            issues.append(
                f"valid customers fell from {previous_n_customers} to {n_customers} ({drop:.0%} fewer, "
                f"more than the allowed {gate.max_customer_drop:.0%}): is the upstream load complete?"
            )
    total = n_customers + n_quarantined
    if total and n_quarantined / total > gate.max_quarantined_share:
        issues.append(
            f"{n_quarantined / total:.1%} of rows were quarantined, more than the allowed "
            f"{gate.max_quarantined_share:.0%} (see segmentation.quarantine)"
        )
    if gate.max_feature_drift is not None:
        for feature, value in sorted((feature_drift or {}).items()):
            if value > gate.max_feature_drift:
                issues.append(
                    f"the inputs of feature {feature} moved: PSI {value:.3f} against the previous run, more than "
                    f"the allowed {gate.max_feature_drift:g} (see current_feature_drift): is the upstream data right?"
                )
    return issues
