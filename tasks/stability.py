"""Stable ids and names for the new segments, drift against the previous run, the quality gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core import input_drift
from segmentation.core import segments as core
from segmentation.core.comparison import Changes
from segmentation.core.segment_stats import SegmentStats
from segmentation.passes import Centroids
from segmentation.source.catalog import Source
from segmentation.store import history
from segmentation.store.run import Run
from segmentation.tasks.extract import TrainingSet
from segmentation.tasks.model import TrainedModel


@dataclass
class SegmentIdentity:
    ids: np.ndarray  # published segment id per KMeans label, then per missing-value segment
    names: list[str]  # likewise
    shifts: np.ndarray  # centroid shift per label, standardised units (NaN when new)
    centroids: Centroids  # what the scoring pass assigns customers with
    rules: tuple[str, ...] = ()  # the missing-value segments' features, after the k clustered ones


@task(name="load-previous-run", cache_policy=NO_CACHE)
def load_previous(run: Run, source: Source) -> history.PreviousRun | None:
    previous = run.previous()
    if previous is not None:
        comparable = previous.comparable(str(source.table), source.plan.key())
        get_run_logger().info(
            "previous published run %d (%d customers)%s",
            previous.run_id,
            previous.n_customers,
            "" if comparable else "; other table or features, so segment ids start afresh",
        )
    return previous


def warm_start(previous: history.PreviousRun | None, source: Source, k: int) -> np.ndarray | None:
    """The previous centroids (original units) when they can seed this run's KMeans."""
    if (
        previous is not None
        and previous.comparable(str(source.table), source.plan.key())
        and len(previous.segment_ids) == k
    ):
        return previous.centroids
    return None


@task(name="match-segments", cache_policy=NO_CACHE)
def match_segments(
    run: Run, source: Source, model: TrainedModel, previous: history.PreviousRun | None, match_threshold: float
) -> SegmentIdentity:
    comparable = (
        previous if previous is not None and previous.comparable(str(source.table), source.plan.key()) else None
    )
    next_id = run.next_segment_id()
    matching = core.match_segments(
        model.centers,
        model.scaler.transform(comparable.centroids) if comparable else None,
        comparable.segment_ids if comparable else None,
        max_shift=match_threshold,
        next_id=next_id,
    )
    # A segment that keeps its id keeps its name while the name still describes it.
    names = core.stable_names(
        source.plan,
        model.scaler.unweighted(model.centers),
        model.centers_original,
        matching.segment_ids,
        comparable.names if comparable else {},
    )
    # The missing-value segments keep their ids by feature, from the previous run on the same table.
    rules = previous.rules if previous is not None and previous.same_table(str(source.table)) else {}
    next_id = max([next_id, *(int(i) + 1 for i in matching.segment_ids)])
    rule_ids = []
    for feature in source.plan.rule_features:
        if feature.column in rules:
            rule_ids.append(rules[feature.column])
        else:
            rule_ids.append(next_id)
            next_id += 1
    ids = np.concatenate([matching.segment_ids, np.array(rule_ids, dtype=np.int64)])
    names += [feature.spec.segment_name for feature in source.plan.rule_features]
    shifts = np.concatenate([matching.shifts, np.full(len(rule_ids), np.nan)])
    logger = get_run_logger()
    for label in np.argsort(ids):
        shift = shifts[label]
        kept = label >= len(model.centers) and int(ids[label]) in rules.values()
        logger.info(
            "segment %d: %s (%s)",
            ids[label],
            names[label],
            "kept, missing-value segment"
            if kept
            else "new"
            if np.isnan(shift)
            else f"kept, centroid moved {shift:.2f} sd",
        )
    # A missing-value segment's customers are at distance 0 from it: its outlier distance is 0.
    outliers = (
        None if model.outlier_distance is None else np.concatenate([model.outlier_distance, np.zeros(len(rule_ids))])
    )
    centroids = Centroids(model.centers, model.scaler, ids, source.plan, outliers)
    return SegmentIdentity(ids, names, shifts, centroids, tuple(f.column for f in source.plan.rule_features))


@task(name="measure-drift", cache_policy=NO_CACHE)
def measure_drift(
    run: Run, source: Source, previous: history.PreviousRun | None, changes: Changes | None
) -> history.Drift | None:
    """Against the previous run on the same table: from the changes the scoring pass found in
    memory (segmentation.passes.ScoredPart), else in SQL."""
    if previous is None or not previous.same_table(str(source.table)):
        return None
    drift = run.drift(previous, changes)
    if drift is None:
        return None
    churn = "n/a" if drift.churn is None else f"{drift.churn:.1%}"
    get_run_logger().info(
        "drift vs run %d: %s of %d customers changed segment, ARI %s, %d added, %d removed",
        drift.previous_run_id,
        churn,
        drift.customers_compared,
        "n/a" if drift.adjusted_rand_index is None else f"{drift.adjusted_rand_index:.3f}",
        drift.customers_added,
        drift.customers_removed,
    )
    return drift


@dataclass
class InputDrift:
    """This run's feature distributions, and how each feature moved against the previous run's."""

    distributions: list[input_drift.Distribution]
    drifts: list[input_drift.FeatureDrift]
    previous_run_id: int | None

    def psi(self) -> dict[str, float]:
        return {d.feature: d.psi for d in self.drifts}


@task(name="measure-input-drift", cache_policy=NO_CACHE)
def measure_input_drift(
    run: Run, source: Source, training: TrainingSet, previous: history.PreviousRun | None
) -> InputDrift:
    """Each feature's distribution in the training set, and its PSI against the previous
    published run's on the same table (segmentation.core.input_drift)."""
    compared = previous.run_id if previous is not None and previous.same_table(str(source.table)) else None
    before = run.distributions(compared) if compared is not None else {}
    now, drifts = input_drift.drift(source.plan, training.X, training.rule, before)
    logger = get_run_logger()
    for d in drifts:  # none without a run to compare with
        logger.info("input drift vs run %s: %s PSI %.3f (%s)", compared, d.feature, d.psi, d.verdict)
    return InputDrift(now, drifts, compared if drifts else None)


@task(name="quality-gate", cache_policy=NO_CACHE)
def quality_gate(
    source: Source,
    stats: SegmentStats,
    model: TrainedModel,
    previous: history.PreviousRun | None,
    n_quarantined: int,
    gate: core.QualityGate,
    inputs: InputDrift | None = None,
) -> list[str]:
    segments = stats.segments(has_gender=False).iloc[: model.k]  # the missing-value segments are rules, not clusters
    issues = core.quality_issues(
        gate,
        silhouette=model.silhouette,
        shares=dict(zip(segments["segment_id"].tolist(), segments["share"].tolist())),
        n_customers=stats.n_customers,
        previous_n_customers=(
            previous.n_customers if previous is not None and previous.same_table(str(source.table)) else None
        ),
        n_quarantined=n_quarantined,
        feature_drift=inputs.psi() if inputs is not None else {},
    )
    for issue in issues:
        get_run_logger().warning("quality gate: %s", issue)
    return issues
