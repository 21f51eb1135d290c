"""Segment profiles and descriptions without a database (segmentation.core.profiles): the
population, z, share, lift and rank from the scoring pass's figures, and sentences that are
distinct within a run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from segmentation.core.feature_plan import FeaturePlan, PlannedFeature
from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.profiles import describe, profiles
from segmentation.core.segment_stats import SegmentStats

pytestmark = pytest.mark.unit

PLAN = FeaturePlan(
    (
        PlannedFeature(FeatureSpec(column="monetary", transform="log1p", label="spend"), "numeric"),
        PlannedFeature(FeatureSpec(column="plan", kind="category"), "text", ("pro", "free"), False),
        PlannedFeature(FeatureSpec(column="recency", missing="segment", low="Recent", high="Lapsed"), "int4"),
    )
)


def figures() -> tuple[SegmentStats, np.ndarray]:
    """Two clusters and the missing-value segment of recency; values in the features' own units."""
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    X = np.array(
        [
            [1000.0, 1, 0, 2],
            [1200.0, 1, 0, 4],
            [1400.0, 0, 1, 3],
            [10.0, 0, 1, 200],
            [20.0, 0, 1, 300],
            [30.0, 0, 1, 250],
            [0.0, 0, 1, 0],  # recency missing: carried as 0
            [0.0, 1, 0, 0],
        ]
    )
    stats = SegmentStats(3, PLAN.input_names, [7, 8, 9])
    stats.update(labels, X)
    return stats, X


def test_profiles_compare_each_segment_with_the_population():
    stats, X = figures()
    frame = profiles(stats, PLAN, k=2)
    row = frame.set_index(["segment_id", "feature", "level"], drop=False)
    money = X[:, 0]
    assert math.isclose(row.loc[(7, "monetary", None), "value"], 1200.0)
    assert math.isclose(row.loc[(7, "monetary", None), "population"], money.mean())
    assert math.isclose(row.loc[(7, "monetary", None), "z"], (1200.0 - money.mean()) / money.std())
    pro = X[:, 1].mean()
    assert math.isclose(row.loc[(7, "plan", "pro"), "share"], 2 / 3)
    assert math.isclose(row.loc[(7, "plan", "pro"), "lift"], (2 / 3) / pro)
    assert math.isclose(row.loc[(7, "plan", "pro"), "z"], (2 / 3 - pro) / math.sqrt(pro * (1 - pro)))
    # Recency is profiled over the customers who have it: the missing-value segment has no row.
    recency = X[:6, 3]
    assert math.isclose(row.loc[(8, "recency", None), "population"], recency.mean())
    assert (9, "recency", None) not in row.index and (9, "monetary", None) in row.index
    # Ranks: by |z|, 1 first, one per row of the segment.
    for _, rows in frame.groupby("segment_id"):
        assert sorted(rows["rank"]) == list(range(1, len(rows) + 1))
        assert rows.sort_values("rank")["z"].abs().is_monotonic_decreasing


def test_descriptions_are_plain_words_in_original_units_and_distinct():
    stats, _ = figures()
    frame = profiles(stats, PLAN, k=2)
    names = {7: "High spend", 8: "Low spend", 9: "No recency"}
    said = describe(frame, PLAN, names, missing={9: "recency"})
    assert said[7].startswith("Spend about 2.") and "(1,200)" in said[7]
    assert said[8].startswith("Lapsed (recency about 2.0 times the average, 250)")
    assert said[9].startswith("No recency")
    assert len(set(said.values())) == 3
    # Two segments that would read the same get one more trait, then their names.
    twins = frame[frame["segment_id"] == 7].assign(segment_id=6)
    doubled = describe(pd.concat([frame, twins]), PLAN, {**names, 6: "High spend (2)"}, missing={9: "recency"})
    assert doubled[6] != doubled[7]


def test_a_log1p_feature_is_profiled_as_the_model_reads_it():
    """Spend heavy-tailed: on raw values one whale makes the middle segment look average; on
    ln(1 + x), as the model and the name read it, it is well above the typical customer."""
    from segmentation.core.model import Scaler
    from segmentation.core.profiles import ModelSpace

    plan = FeaturePlan((PlannedFeature(FeatureSpec(column="monetary", transform="log1p", label="spend"), "numeric"),))
    spend = np.array([1.0, 2, 1, 2] * 5 + [60, 70, 80, 90, 100, 100_000])
    labels = np.array([0] * 20 + [1] * 5 + [2])
    stats = SegmentStats(3, plan.input_names, [1, 2, 3])
    stats.update(labels, spend[:, None])
    inputs = np.log1p(spend)[:, None]
    scaler = Scaler.fit(inputs)
    centers = np.array([inputs[labels == s].mean(axis=0) for s in range(3)])
    space = ModelSpace(centers, scaler.transform(centers.copy()), scaler.mean)

    raw = profiles(stats, plan, 3).set_index("segment_id")
    assert abs(raw.loc[2, "z"]) < 0.5  # 80 against a raw mean of 3,866: "close to the average"
    seen = profiles(stats, plan, 3, space).set_index("segment_id")
    assert math.isclose(seen.loc[2, "value"], float(np.expm1(np.log1p([60.0, 70, 80, 90, 100]).mean())))
    assert math.isclose(seen.loc[2, "population"], float(np.expm1(np.log1p(spend).mean())))
    assert math.isclose(seen.loc[2, "z"], float(space.z[1, 0])) and seen.loc[2, "z"] > 0.5
    said = describe(seen.reset_index(), plan, {1: "Low spend", 2: "High spend", 3: "Very high spend"})
    assert said[2] == "Spend about 12.7 times the average (78.7)", said
    # Below the population: the two figures, not "n times below the average".
    below = seen.reset_index().iloc[[0]].assign(value=6.4, population=30.0, z=-1.0)
    assert describe(below, plan, {1: "Low spend"}) == {1: "Spend 6.4 (average 30.0)"}
