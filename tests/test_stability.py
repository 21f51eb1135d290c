"""Stable segment ids, names, drift, the quality gate and retention, through Prefect."""

import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers, load_csv
from support.artifacts import artifacts_of

pytestmark = pytest.mark.usefixtures("prefect_harness")
MALL = {"features": ["annual_income", "spending_score"]}


def run(**params):
    return customer_segmentation(**params, return_state=True)


def published(**params) -> dict:
    state = run(**params)
    assert state.is_completed(), state.message
    return state.result()


def segments_by_id(conn, run_id):
    """segment id -> (rounded centroid, name, size)"""
    rows = conn.execute(
        """SELECT s.segment_id, s.segment_name, s.n_customers,
                  array_agg(round(c.centroid::numeric, 1) ORDER BY c.feature)
           FROM segmentation.segments s JOIN segmentation.segment_centroids c USING (run_id, segment_id)
           WHERE s.run_id = %s GROUP BY 1, 2, 3""",
        (run_id,),
    ).fetchall()
    return {sid: (tuple(float(v) for v in cent), name, n) for sid, name, n, cent in rows}


def assignments(conn, run_id):
    return dict(
        conn.execute(
            "SELECT customer_id, segment_id FROM segmentation_bi.customer_segment_history WHERE run_id = %s", (run_id,)
        ).fetchall()
    )


def test_rerun_on_unchanged_data_has_identical_ids_and_no_churn(conn, mall_csv):
    load_csv(conn, mall_csv)
    first = published(n_clusters=5, **MALL)
    second = published(n_clusters=5, **MALL)
    assert assignments(conn, second["run_id"]) == assignments(conn, first["run_id"])
    assert segments_by_id(conn, second["run_id"]) == segments_by_id(conn, first["run_id"])
    drift = conn.execute(
        """SELECT previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index,
                  customers_added, customers_removed FROM segmentation.runs WHERE run_id = %s""",
        (second["run_id"],),
    ).fetchone()
    assert drift == (first["run_id"], 200, 0, 0.0, 1.0, 0, 0)
    changes = conn.execute(
        "SELECT previous_n_customers = n_customers, size_change, centroid_shift < 1e-9 FROM segmentation.segments WHERE run_id = %s",
        (second["run_id"],),
    ).fetchall()
    assert changes == [(True, 0, True)] * 5


def test_mall_segments_get_the_names_people_use(conn, mall_csv):
    load_csv(conn, mall_csv)
    result = published(n_clusters=5, **MALL)
    names = {c: name for c, name, _ in segments_by_id(conn, result["run_id"]).values()}
    assert names == {
        (55.3, 49.5): "Average income · Average spending",
        (86.5, 82.1): "High income · High spending",
        (25.7, 79.4): "Low income · High spending",
        (88.2, 17.1): "High income · Low spending",
        (26.3, 20.9): "Low income · Low spending",
    }
    # Names reach every current_ view.
    for view in ("current_segments", "current_customer_segments", "current_segment_centroids"):
        found = {r[0] for r in conn.execute(f"SELECT DISTINCT segment_name FROM segmentation_bi.{view}")}
        assert found == set(names.values()), view


def test_permuted_rows_and_a_5_percent_perturbation_keep_every_id(conn, mall_csv):
    load_csv(conn, mall_csv)
    first = published(n_clusters=5, **MALL)
    before = segments_by_id(conn, first["run_id"])
    # New physical row order, and every income and score moved by up to 5%.
    conn.execute("CREATE TABLE shuffled AS SELECT * FROM customers ORDER BY md5(customer_id::text)")
    conn.execute("TRUNCATE customers")
    conn.execute(
        """INSERT INTO customers SELECT customer_id, gender, age,
               round(annual_income * (0.95 + 0.1 * ((customer_id * 7919) % 101) / 100.0), 1),
               greatest(1, least(100, round(spending_score * (0.95 + 0.1 * ((customer_id * 104729) % 103) / 102.0))))
           FROM shuffled"""
    )
    second = published(n_clusters=5, **MALL)
    after = segments_by_id(conn, second["run_id"])
    assert set(after) == set(before)
    for segment_id, (centroid, name, _) in after.items():
        old_centroid, old_name, _ = before[segment_id]
        assert name == old_name
        assert max(abs(a - b) for a, b in zip(centroid, old_centroid)) < 5
    churn = conn.execute("SELECT churn FROM segmentation.runs WHERE run_id = %s", (second["run_id"],)).fetchone()[0]
    assert churn < 0.1


def test_k_from_5_to_6_adds_exactly_one_new_id(conn, mall_csv):
    load_csv(conn, mall_csv)
    first = published(n_clusters=5, **MALL)
    second = published(n_clusters=6, **MALL)
    old_ids = set(segments_by_id(conn, first["run_id"]))
    new_ids = set(segments_by_id(conn, second["run_id"]))
    assert old_ids == {1, 2, 3, 4, 5}
    assert new_ids == old_ids | {6}
    new_segment = conn.execute(
        "SELECT previous_n_customers, size_change, centroid_shift FROM segmentation.segments WHERE run_id = %s AND segment_id = 6",
        (second["run_id"],),
    ).fetchone()
    assert new_segment == (None, None, None)
    # Back to 5: the ids of the first run come back, 6 is retired and never reused.
    third = published(n_clusters=5, **MALL)
    assert set(segments_by_id(conn, third["run_id"])) == old_ids
    fourth = published(n_clusters=6, **MALL)
    assert set(segments_by_id(conn, fourth["run_id"])) == old_ids | {7}


def test_gate_rejects_a_truncated_source_and_force_publish_overrides(conn):
    generate_customers(conn, 2000, seed=2)
    good = published(n_clusters=5)
    conn.execute("DELETE FROM customers WHERE customer_id % 10 <> 0")  # 90% gone: a broken upstream load
    state = run(n_clusters=5)
    assert state.is_failed()
    assert state.message.startswith("quality gate rejected run")
    assert "valid customers fell from 2000 to 200 (90% fewer, more than the allowed 50%)" in state.message
    assert "force_publish=true" in state.message
    status, error, issues = conn.execute(
        "SELECT status, error, quality_issues FROM segmentation.runs ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    assert status == "rejected" and error == state.message and len(issues) == 1
    # The rejected run is complete and kept (it can be promoted with --force): its report says
    # why it was rejected, and shows the segments it found.
    reported = artifacts_of(state.state_details.flow_run_id)
    assert set(reported) == {"segmentation-summary", "segmentation-k-selection", "segmentation-plot"}
    summary = reported["segmentation-summary"].data
    assert summary.startswith(f"# Segmentation run {good['run_id'] + 1}: rejected")
    assert "valid customers fell from 2000 to 200" in summary and "## Segments" in summary
    current = conn.execute("SELECT run_id, n_customers FROM segmentation_bi.current_run").fetchone()
    assert current == (good["run_id"], 2000)
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 2000

    forced = published(n_clusters=5, force_publish=True)
    assert forced["forced"] is True
    row = conn.execute(
        "SELECT run_id, n_customers, forced, quality_issues, customers_removed FROM segmentation_bi.current_run"
    ).fetchone()
    assert row[:3] == (forced["run_id"], 200, True)
    assert "valid customers fell from 2000 to 200" in row[3][0]
    assert row[4] == 1800


def test_gate_thresholds_are_parameters(conn):
    generate_customers(conn, 1000, seed=3)
    state = run(n_clusters=5, min_silhouette=0.99)
    assert state.is_failed() and "silhouette" in state.message and "below the minimum 0.99" in state.message
    state = run(n_clusters=5, min_segment_share=0.5)
    assert state.is_failed() and "below the minimum 50.00%" in state.message
    assert published(n_clusters=5)["forced"] is False


def test_retention_drops_exactly_the_oldest_runs_customer_rows(conn, monkeypatch, mall_csv):
    monkeypatch.setenv("SEGMENTATION_KEEP_PUBLISHED_RUNS", "2")
    load_csv(conn, mall_csv)
    run_ids, rows = [], {}
    for k in (4, 5, 6, 5):
        run_ids.append(published(n_clusters=k, **MALL)["run_id"])
        rows[run_ids[-1]] = assignments(conn, run_ids[-1])
    kept, dropped = run_ids[2:], run_ids[:2]
    # Only the current run keeps a table of its own; the history answers for the others.
    partitions = {
        r[0]
        for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'segmentation.customer_segments'::regclass"
        )
    }
    assert partitions == {f"segmentation.customer_segments_run_{run_ids[-1]}"}
    for r in run_ids[:-1]:
        assert (
            conn.execute("SELECT to_regclass(%s)", (f"segmentation.customer_segments_run_{r}",)).fetchone()[0] is None
        )
    statuses = conn.execute(
        "SELECT run_id, status, assignments_pruned_at IS NOT NULL FROM segmentation.runs ORDER BY run_id"
    ).fetchall()
    assert statuses == [(r, "published", r in dropped) for r in run_ids]
    # Run-level rows stay for every run.
    assert conn.execute("SELECT count(DISTINCT run_id) FROM segmentation.segments").fetchone()[0] == 4
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 200
    history = conn.execute(
        """SELECT run_id, segment_id, segment_name FROM segmentation_bi.customer_segment_history
           WHERE customer_id = 1 ORDER BY published_at"""
    ).fetchall()
    assert [h[0] for h in history] == kept
    assert all(name for _, _, name in history)
    for r in kept:
        assert assignments(conn, r) == rows[r]
    for r in dropped:
        assert assignments(conn, r) == {}
    # Spells that ended before the oldest kept run are gone.
    oldest = conn.execute("SELECT history_version FROM segmentation.runs WHERE run_id = %s", (kept[0],)).fetchone()[0]
    assert conn.execute(
        "SELECT count(*) FROM segmentation.segment_spells WHERE ended_version <= %s", (oldest,)
    ).fetchone() == (0,)


def test_changed_features_start_ids_afresh(conn, mall_csv):
    load_csv(conn, mall_csv)
    first = published(n_clusters=5, **MALL)
    second = published(n_clusters=5, features=["age", "spending_score"])
    assert set(segments_by_id(conn, second["run_id"])).isdisjoint(segments_by_id(conn, first["run_id"]))
    # Drift is still measured customer by customer.
    compared = conn.execute(
        "SELECT customers_compared FROM segmentation.runs WHERE run_id = %s", (second["run_id"],)
    ).fetchone()[0]
    assert compared == 200


def test_names_typed_differently_still_match_the_previous_run(conn, mall_csv):
    load_csv(conn, mall_csv)
    first = published(n_clusters=5, features=["Annual_Income", '"spending_score"'], source_table="customers")
    second = published(n_clusters=5, features=["annual_income", "SPENDING_SCORE"], source_table="public.customers")
    assert segments_by_id(conn, second["run_id"]) == segments_by_id(conn, first["run_id"])
    assert conn.execute("SELECT DISTINCT source_table, features FROM segmentation.runs").fetchall() == [
        ("public.customers", ["annual_income", "spending_score"])
    ]
    assert second["churn"] == 0.0


def test_a_rejected_run_does_not_wait_for_bi_readers(conn, database_url):
    import psycopg

    generate_customers(conn, 2000, seed=5)
    published(n_clusters=5)
    with psycopg.connect(database_url) as reader:
        # A BI session with a transaction open on the views (a long export, say). If the
        # rejected run's cleanup needed a lock on customer_segments it would wait until this
        # session gave up (20 s), and the session's next query would then fail: that it
        # still answers, in the same transaction, shows the run never waited for it.
        reader.execute("SET idle_in_transaction_session_timeout = '20s'")
        reader.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()
        state = run(n_clusters=5, min_silhouette=0.99)
        assert state.is_failed() and "quality gate rejected" in state.message
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert reader.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 2000
