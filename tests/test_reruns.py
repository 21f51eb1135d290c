"""Reruns are exact: the same data and settings give every customer the same segment id and 0
churn, at 50,000 and 1,000,000 customers, with the training sample smaller than the table,
and with k chosen automatically. A small change in the data keeps every segment id."""

from __future__ import annotations

import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from support.data import keep_assignments

pytestmark = pytest.mark.usefixtures("prefect_harness")


def published(**params) -> dict:
    state = customer_segmentation(**params, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def published_twice(conn, **params) -> tuple[dict, dict, str]:
    """Two runs in a row; the first one's full rows copied while it was current."""
    first = published(**params)
    copy = keep_assignments(conn, first["run_id"])
    return first, published(**params), copy


def assert_identical(conn, first: dict, second: dict, first_rows: str) -> None:
    """Customer for customer: the same segment id, and the same distance to its centroid."""
    differ = conn.execute(
        f"""SELECT count(*) FILTER (WHERE a.segment_id IS DISTINCT FROM b.segment_id),
                   max(abs(a.distance - b.distance)), count(*)
            FROM {first_rows} a FULL JOIN segmentation_bi.current_customer_segments b USING (customer_id)"""
    ).fetchone()
    assert differ[0] == 0 and differ[1] < 1e-9 and differ[2] == first["n_customers"] == second["n_customers"]
    drift = conn.execute(
        "SELECT customers_changed, churn, adjusted_rand_index, customers_added, customers_removed "
        "FROM segmentation.runs WHERE run_id = %s",
        (second["run_id"],),
    ).fetchone()
    assert drift == (0, 0.0, 1.0, 0, 0)
    assert second["churn"] == 0.0


def test_a_rerun_on_unchanged_data_is_exact(conn):
    generate_customers(conn, 50_000, seed=11)
    first, second, first_rows = published_twice(conn, n_clusters=5)
    assert_identical(conn, first, second, first_rows)


def test_a_rerun_is_exact_with_a_training_sample_and_k_chosen_automatically(conn, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_TRAINING_SAMPLE_SIZE", "20000")  # the table has 60,000
    monkeypatch.setenv("SEGMENTATION_K_SELECTION_SAMPLE_SIZE", "5000")
    generate_customers(conn, 60_000, seed=12)
    first, second, first_rows = published_twice(conn, k_min=3, k_max=6)
    assert first["k"] == second["k"]
    assert_identical(conn, first, second, first_rows)


def test_a_rerun_is_exact_at_a_million_customers(conn):
    generate_customers(conn, 1_000_000, seed=13)
    first, second, first_rows = published_twice(conn, n_clusters=5)
    assert_identical(conn, first, second, first_rows)


def test_a_small_change_keeps_every_segment_id(conn):
    generate_customers(conn, 50_000, seed=14)
    first = published(n_clusters=5)
    # 5% of customers' spending scores move by up to 3 points.
    changed = conn.execute(
        "UPDATE customers SET spending_score = least(100, greatest(1, spending_score + (customer_id / 20) % 7 - 3)) "
        "WHERE customer_id % 20 = 0"
    ).rowcount
    assert changed == 2_500
    second = published(n_clusters=5)
    ids = conn.execute(
        "SELECT run_id, array_agg(segment_id ORDER BY segment_id), count(centroid_shift) "
        "FROM segmentation.segments WHERE run_id IN (%s, %s) GROUP BY run_id ORDER BY run_id",
        (first["run_id"], second["run_id"]),
    ).fetchall()
    assert ids[0][1] == ids[1][1] and ids[1][2] == 5  # every segment kept its id
    assert second["churn"] < 0.01
