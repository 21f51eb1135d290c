"""Keeping segment meaning stable across retrains, naming segments, and measuring drift.

KMeans numbers its clusters arbitrarily on every fit (scikit-learn issue 20216), so a
dashboard filtered on "segment 3" would silently change meaning overnight. New centroids are
matched to the previous published run's centroids (Hungarian assignment on distances in the
new run's standardised space) and inherit their ids; a centroid with no match close enough
gets an id never used before."""

from __future__ import annotations

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


def segment_name(features: Sequence[str], z: np.ndarray, original: np.ndarray) -> str:
    """A readable name from a centroid relative to the population: `z` is the centroid in
    standardised units (0 = population mean), `original` in original units."""
    parts = []
    for feature, zj, xj in zip(features, z, original):
        if feature == "age":
            continue  # an age band says more than "High age"
        if feature == "gender":
            parts.append("Mostly women" if xj >= 0.6 else "Mostly men" if xj <= 0.4 else "Mixed gender")
            continue
        parts.append(f"{_level(zj)} {_WORDS.get(feature, feature.replace('_', ' '))}")
    if "age" in features:
        parts.append(_age_band(float(original[list(features).index("age")])))
    return " · ".join(parts)


def segment_names(plan: FeaturePlan, centers_z: np.ndarray, centers_inputs: np.ndarray) -> list[str]:
    """One name per centroid, made unique within the run with a numeric suffix. centers_z: in
    standard deviations from the population mean (weights undone); centers_inputs: in the
    model's input units. Bare column names are named as they always were."""
    if plan.simple:
        names = [segment_name(list(plan.columns), z, x) for z, x in zip(centers_z, centers_inputs)]
    else:
        names = [_name_from_plan(plan, z, x) for z, x in zip(centers_z, centers_inputs)]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else f"{name} ({seen[name]})")
    return unique


def _name_from_plan(plan: FeaturePlan, z: np.ndarray, inputs: np.ndarray) -> str:
    parts: list[str] = []
    ages: list[str] = []
    for index, feature in enumerate(plan.features):
        spec = feature.spec
        columns = [j for j, i in enumerate(plan.inputs) if i.feature == index]
        if spec.kind == "category":
            shares = {"other" if plan.inputs[j].other else plan.inputs[j].level: float(inputs[j]) for j in columns}
            if shares:
                level, share = max(shares.items(), key=lambda item: item[1])
                if share >= 0.5:
                    parts.append(f"Mostly {level} {spec.words}")
            continue
        j = columns[0]
        if spec.plain and spec.column == "age":
            ages.append(_age_band(float(inputs[j])))
        elif feature.gender_rule:
            x = float(inputs[j])
            parts.append("Mostly women" if x >= 0.6 else "Mostly men" if x <= 0.4 else "Mixed gender")
        else:
            parts.append(_level_words(float(z[j]), spec.words, spec.low, spec.high))
    return " · ".join(parts + ages) or "Typical customers"


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
