"""How a run's inputs moved against the previous published run's, feature by feature: the
population stability index (PSI) over the previous run's deciles for a number, over its level
shares for a category.

PSI = sum over bins of (q - p) * ln(q / p), p the previous run's share of a bin, q this run's; a
share below EPSILON counts as EPSILON, so an empty bin does not make it infinite. Read as the
industry does: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a large one.

Each run keeps its own distributions (a number's decile edges and the shares of its values
between them; a category's level shares), computed from its training set in the input's units,
so the next run compares itself with them without reading the previous run's customers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation.core.feature_plan import OTHER_LEVEL, FeaturePlan

EPSILON = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)
MODERATE, LARGE = 0.1, 0.25


@dataclass(frozen=True)
class Distribution:
    """A feature's distribution in one run: for a number, `edges` (the deciles' cut points, each
    bin (edge[i-1], edge[i]], the first from -inf, the last to +inf) and the share of values in
    each bin; for a category, `levels` and the share of each."""

    feature: str
    units: str  # kind and transform ("number:log1p"): runs compare a feature only in the same units
    shares: tuple[float, ...]
    edges: tuple[float, ...] | None = None
    levels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float

    @property
    def verdict(self) -> str:
        return "large" if self.psi > LARGE else "moderate" if self.psi > MODERATE else "stable"


def distributions(plan: FeaturePlan, X: np.ndarray, rule: np.ndarray | None) -> list[Distribution]:
    """Each feature's distribution over the rows that have it (X in input units, as the run
    reads them; rule: the rows' missing-value segments, 0 for none)."""
    found = []
    for index, feature in enumerate(plan.features):
        columns = [j for j, i in enumerate(plan.inputs) if i.feature == index]
        rows = X if rule is None or not feature.segments_missing else X[rule == 0]
        if not len(rows):
            continue
        units = f"{feature.spec.kind}:{feature.spec.transform}"
        if feature.spec.kind == "category":
            levels = tuple(OTHER_LEVEL if plan.inputs[j].other else str(plan.inputs[j].level) for j in columns)
            shares = rows[:, columns].mean(axis=0)
            found.append(Distribution(feature.column, units, tuple(float(s) for s in shares), levels=levels))
            continue
        values = rows[:, columns[0]]
        edges = np.unique(np.quantile(values, DECILES, method="inverted_cdf"))
        found.append(Distribution(feature.column, units, _shares(values, edges), edges=tuple(float(e) for e in edges)))
    return found


def _shares(values: np.ndarray, edges: np.ndarray) -> tuple[float, ...]:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return tuple(float(c) for c in counts / max(len(values), 1))


def psi(previous: Distribution, now: Distribution, values: np.ndarray | None = None) -> float:
    """PSI of `now` against `previous`. A number's values are binned by the previous run's edges
    (`values`: this run's, in the same units); a category compares shares level by level, a
    level missing on one side counting as EPSILON there."""
    if previous.levels is not None and now.levels is not None:
        before = dict(zip(previous.levels, previous.shares))
        after = dict(zip(now.levels, now.shares))
        keys = sorted(set(before) | set(after))
        p = np.array([before.get(k, 0.0) for k in keys])
        q = np.array([after.get(k, 0.0) for k in keys])
    else:
        if previous.edges is None or values is None:
            raise ValueError(f"{now.feature}: a number's PSI needs the previous edges and this run's values")
        p = np.array(previous.shares)
        q = np.array(_shares(values, np.array(previous.edges)))
    p, q = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return float(((q - p) * np.log(q / p)).sum())


def drift(
    plan: FeaturePlan, X: np.ndarray, rule: np.ndarray | None, previous: dict[str, Distribution]
) -> tuple[list[Distribution], list[FeatureDrift]]:
    """This run's distributions, and the PSI of each feature the previous run also had (of the
    same kind)."""
    now = distributions(plan, X, rule)
    drifts = []
    for index, feature in enumerate(plan.features):
        mine = next((d for d in now if d.feature == feature.column), None)
        before = previous.get(feature.column)
        if mine is None or before is None or before.units != mine.units:
            continue
        values = None
        if mine.levels is None:
            column = next(j for j, i in enumerate(plan.inputs) if i.feature == index)
            rows = X if rule is None or not feature.segments_missing else X[rule == 0]
            values = rows[:, column]
        drifts.append(FeatureDrift(feature.column, psi(before, mine, values)))
    return now, drifts
