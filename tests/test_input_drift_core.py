"""Input drift without a database (segmentation.core.input_drift): decile edges and shares, PSI
for numbers and categories, and what is compared."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segmentation.core.feature_plan import FeaturePlan, PlannedFeature
from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.input_drift import EPSILON, Distribution, FeatureDrift, distributions, drift, psi

pytestmark = pytest.mark.unit

PLAN = FeaturePlan(
    (
        PlannedFeature(FeatureSpec(column="monetary", missing="segment"), "numeric"),
        PlannedFeature(FeatureSpec(column="plan", kind="category"), "text", ("pro", "free"), True),
    )
)


def data(rng, n, scale=1.0):
    money = rng.lognormal(3, 1, n) * scale
    level = rng.choice(3, n, p=[0.2, 0.5, 0.3])
    X = np.column_stack([money, level == 0, level == 1, level == 2]).astype(float)
    rule = np.zeros(n, dtype=np.int16)
    rule[:50] = 1  # no monetary: carried as 0, left out of its distribution
    X[:50, 0] = 0.0
    return X, rule


def test_a_number_is_cut_at_its_deciles_and_a_category_by_its_levels():
    X, rule = data(np.random.default_rng(0), 10_000)
    money, plan = distributions(PLAN, X, rule)
    assert money.units == "number:none" and money.edges is not None and len(money.edges) == 9
    assert np.allclose(money.shares, 0.1, atol=0.001)  # the deciles of the rows that have it
    assert money.edges[0] > 0  # the 50 rows without monetary are not in it
    assert plan.levels == ("pro", "free", "(other)") and np.allclose(plan.shares, X[:, 1:].mean(axis=0))


def test_psi_is_zero_for_the_same_data_and_large_for_a_jump():
    rng = np.random.default_rng(1)
    X, rule = data(rng, 20_000)
    before = {d.feature: d for d in distributions(PLAN, X, rule)}
    _, same = drift(PLAN, X, rule, before)
    assert [d.feature for d in same] == ["monetary", "plan"] and all(d.psi < 1e-9 for d in same)
    Y, rule_y = data(rng, 20_000, scale=10.0)
    _, moved = drift(PLAN, Y, rule_y, before)
    by = {d.feature: d for d in moved}
    assert by["monetary"].psi > 1 and by["monetary"].verdict == "large"
    assert by["plan"].psi < 0.01 and by["plan"].verdict == "stable"


def test_psi_by_hand_and_what_is_not_compared():
    p = Distribution("plan", "category:none", (0.5, 0.5), levels=("a", "b"))
    q = Distribution("plan", "category:none", (0.25, 0.75), levels=("a", "c"))
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    expected += (0.75 - EPSILON) * math.log(0.75 / EPSILON)
    assert math.isclose(psi(p, q), expected)
    assert FeatureDrift("x", 0.11).verdict == "moderate"
    # Another transform: other units, not compared.
    X, rule = data(np.random.default_rng(2), 1_000)
    logged = Distribution("monetary", "number:log1p", (0.1,) * 10, edges=tuple(range(9)))
    _, drifts = drift(PLAN, X, rule, {"monetary": logged})
    assert drifts == []
