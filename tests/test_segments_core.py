"""Stable ids, names, ARI and the quality gate: pure functions."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix

from segmentation.core.feature_plan import FeaturePlan
from segmentation.core.segments import (
    QualityGate,
    adjusted_rand_index,
    compare_from_changes,
    match_segments,
    quality_issues,
    segment_name,
    segment_names,
)

pytestmark = pytest.mark.unit

PREVIOUS = np.array([[0.0, 0.0], [2.0, 2.0], [-2.0, 2.0], [2.0, -2.0]])
PREVIOUS_IDS = [3, 7, 8, 11]


def test_permuted_and_slightly_moved_centroids_keep_their_ids():
    order = [2, 0, 3, 1]
    new = PREVIOUS[order] + 0.1
    m = match_segments(new, PREVIOUS, PREVIOUS_IDS, max_shift=1.0, next_id=12)
    assert m.segment_ids.tolist() == [8, 3, 11, 7]
    assert np.allclose(m.shifts, np.sqrt(0.02))


def test_an_extra_centroid_gets_one_new_id():
    new = np.vstack([PREVIOUS, [[-2.0, -2.0]]])
    m = match_segments(new, PREVIOUS, PREVIOUS_IDS, max_shift=1.0, next_id=12)
    assert m.segment_ids.tolist() == [3, 7, 8, 11, 12]
    assert np.isnan(m.shifts[4])


def test_a_centroid_far_from_every_previous_one_gets_a_new_id():
    new = PREVIOUS.copy()
    new[1] = [5.0, 5.0]  # its nearest previous centroid is 4.2 sd away
    m = match_segments(new, PREVIOUS, PREVIOUS_IDS, max_shift=1.0, next_id=12)
    assert m.segment_ids.tolist() == [3, 12, 8, 11]
    m = match_segments(new, PREVIOUS, PREVIOUS_IDS, max_shift=5.0, next_id=12)
    assert m.segment_ids.tolist() == [3, 7, 8, 11]


def test_fewer_centroids_keep_the_nearest_ids_and_first_run_numbers_from_next_id():
    m = match_segments(PREVIOUS[[1, 3]], PREVIOUS, PREVIOUS_IDS, max_shift=1.0, next_id=12)
    assert m.segment_ids.tolist() == [7, 11]
    first = match_segments(PREVIOUS, None, None, max_shift=1.0, next_id=1)
    assert first.segment_ids.tolist() == [1, 2, 3, 4]


def test_names_read_the_centroid_relative_to_the_population():
    features = ["age", "annual_income", "spending_score"]
    assert (
        segment_name(features, np.array([0.1, 1.0, -1.0]), np.array([33.0, 88.0, 17.0]))
        == "High income · Low spending · Age 30-44"
    )
    assert (
        segment_name(features, np.array([-1, -1.7, 0.2]), np.array([24.0, 20.0, 55.0]))
        == "Very low income · Average spending · Age under 30"
    )
    assert (
        segment_name(["gender", "visits"], np.array([1.0, 2.0]), np.array([0.8, 40.0]))
        == "Mostly women · Very high visits"
    )
    names = segment_names(
        FeaturePlan.of_columns(["spending_score"]), np.array([[1.0], [0.9]]), np.array([[80.0], [78.0]])
    )
    assert names == ["High spending (1)", "High spending (2)"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_from_a_contingency_table_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 500)
    b = np.where(rng.random(500) < 0.8, a, rng.integers(0, 5, 500))
    assert adjusted_rand_index(contingency_matrix(a, b)) == pytest.approx(adjusted_rand_score(a, b))
    assert adjusted_rand_index(contingency_matrix(a, a)) == pytest.approx(1.0)


GATE = QualityGate(min_silhouette=0.2, min_segment_share=0.05, max_customer_drop=0.5, max_quarantined_share=0.1)


def test_quality_gate_passes_a_good_run_and_names_every_problem_of_a_bad_one():
    good = {
        "silhouette": 0.5,
        "shares": {1: 0.5, 2: 0.5},
        "n_customers": 1000,
        "previous_n_customers": 1000,
        "n_quarantined": 0,
    }
    assert quality_issues(GATE, **good) == []
    bad = {
        "silhouette": 0.1,
        "shares": {1: 0.98, 2: 0.02},
        "n_customers": 100,
        "previous_n_customers": 1000,
        "n_quarantined": 50,
    }
    assert quality_issues(GATE, **bad) == [
        "silhouette 0.100 is below the minimum 0.2",
        "segment 2 holds 2.00% of customers, below the minimum 5.00%",
        "valid customers fell from 1000 to 100 (90% fewer, more than the allowed 50%): is the upstream load complete?",
        "33.3% of rows were quarantined, more than the allowed 10% (see segmentation.quarantine)",
    ]
    assert quality_issues(GATE, **{**good, "previous_n_customers": None, "n_customers": 10}) == []


def test_a_comparison_from_the_changes_alone_is_the_full_one():
    rng = np.random.default_rng(9)
    old = dict(zip(range(5000), rng.integers(1, 6, 5000)))
    new = {c: (s if rng.random() > 0.1 else int(rng.integers(1, 7))) for c, s in old.items() if rng.random() > 0.02}
    new.update({c: int(rng.integers(1, 7)) for c in range(5000, 5100)})
    pairs = [(old.get(c), new.get(c)) for c in old.keys() | new.keys()]
    changes = {}
    for o, n in pairs:
        if o != n:
            changes[(o, n)] = changes.get((o, n), 0) + 1
    sizes = {int(s): int(n) for s, n in zip(*np.unique(list(old.values()), return_counts=True))}
    found = compare_from_changes([(o, n, c) for (o, n), c in changes.items()], sizes)
    both = [c for c in old if c in new]
    assert found.customers_compared == len(both)
    assert found.customers_changed == sum(old[c] != new[c] for c in both)
    assert found.churn == found.customers_changed / len(both)
    assert (found.customers_added, found.customers_removed) == (
        len(new.keys() - old.keys()),
        len(old.keys() - new.keys()),
    )
    assert found.adjusted_rand_index == pytest.approx(
        adjusted_rand_score([old[c] for c in both], [new[c] for c in both]), abs=1e-12
    )
    with pytest.raises(ValueError, match="more customers left it than it had"):
        compare_from_changes([(1, 2, 10)], {1: 5})
