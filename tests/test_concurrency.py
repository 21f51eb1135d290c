"""Runs against runs, readers against publishes, writers against the snapshot."""

import re

import psycopg
import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from support.bi_reader import assert_each_saw_one_complete_run, bi_reader
from support.processes import start_flow_process, wait_for

FAST = {"n_clusters": 4, "n_init": 1}


def run_backends_waiting(conn):
    return conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'segmentation-run' AND wait_event_type = 'Lock'"
    ).fetchall()


def test_two_runs_started_together_publish_exactly_once(conn, database_url, prefect_harness):
    generate_customers(conn, 5000, seed=31)
    with psycopg.connect(database_url) as blocker:
        # Park whichever run wins the run lock inside its publish, so the two overlap for sure.
        blocker.execute("LOCK TABLE segmentation.segments IN ACCESS EXCLUSIVE MODE")
        processes = [start_flow_process(prefect_harness, database_url, **FAST) for _ in range(2)]
        try:
            wait_for(lambda: run_backends_waiting(conn), what="one run to reach its publish")
            loser = wait_for(
                lambda: next((p for p in processes if p.poll() is not None), None),
                timeout=60,
                what="the second run to give up",
            )
            blocker.rollback()
            winner = next(p for p in processes if p is not loser)
            winner.wait(timeout=60)
        finally:
            for p in processes:
                p.kill()
    assert loser.returncode == 3
    # "(run N, started ...)" follows when the winner's runs row was already committed; the
    # loser may also have looked in the instant between the winner's lock and that row.
    assert re.match(
        r"another segmentation run is in progress( \(run \d+, started [^)]+\))?; wait for it", loser.stdout.read()
    )
    assert winner.returncode == 0
    statuses = conn.execute("SELECT status, count(*) FROM segmentation.runs GROUP BY 1").fetchall()
    assert dict(statuses) == {"published": 1}  # the loser never got as far as a runs row
    assert conn.execute(
        "SELECT count(*), count(DISTINCT run_id) FROM segmentation_bi.current_customer_segments"
    ).fetchone() == (5000, 1)


@pytest.mark.usefixtures("prefect_harness")
def test_bi_readers_always_see_one_complete_run_during_publishes(conn, database_url):
    generate_customers(conn, 20_000, seed=32)
    published = []
    with bi_reader(database_url) as observations:
        for i in range(4):
            conn.execute("DELETE FROM customers WHERE customer_id %% 10 = %s", (i,))  # each run is smaller
            state = customer_segmentation(**FAST, max_customer_drop=0.9, return_state=True)
            assert state.is_completed(), state.message
            published.append(state.result()["run_id"])
    seen = {o[0] for o in observations if o[0] is not None}
    assert len(observations) > 20 and len(seen) >= 3
    assert_each_saw_one_complete_run(observations)


def test_source_changes_during_a_run_do_not_reach_it(conn, database_url, prefect_harness):
    generate_customers(conn, 3000, seed=33)
    # One invalid row, so that the run quarantines (a clean table skips that step).
    conn.execute("INSERT INTO customers VALUES (3001, 'Female', NULL, 50, 50)")
    conn.execute("CREATE TABLE before_run AS TABLE customers")
    # A small training sample makes the run read the source twice (train, then score).
    env = {"SEGMENTATION_TRAINING_SAMPLE_SIZE": "1000", "SEGMENTATION_CHUNK_ROWS": "500"}
    with psycopg.connect(database_url) as blocker:
        # The run has read its training sample when it reaches the quarantine; park it there,
        # change the source, and let it score from its snapshot.
        blocker.execute("LOCK TABLE segmentation.quarantine IN ACCESS EXCLUSIVE MODE")
        process = start_flow_process(prefect_harness, database_url, env, **FAST)
        try:
            wait_for(lambda: run_backends_waiting(conn), what="the run to park at the quarantine")
            conn.execute("UPDATE customers SET spending_score = 101 - spending_score, age = age + 1")
            conn.execute("DELETE FROM customers WHERE customer_id <= 100")
            conn.execute(
                "INSERT INTO customers SELECT customer_id + 100000, gender, age, annual_income, spending_score FROM customers LIMIT 500"
            )
            blocker.rollback()
            process.wait(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 0, process.stdout.read()
    run_id, n = conn.execute("SELECT run_id, n_customers FROM segmentation_bi.current_run").fetchone()
    assert n == 3000
    ids = conn.execute(
        "SELECT min(customer_id), max(customer_id), count(*) FROM segmentation_bi.current_customer_segments"
    ).fetchone()
    assert ids == (1, 3000, 3000)
    # Every published mean is the mean of the table as it was when the run started.
    mismatches = conn.execute(
        """WITH truth AS (
               SELECT cs.segment_id, avg(b.spending_score) AS spending, avg(b.age) AS age
               FROM segmentation_bi.current_customer_segments cs JOIN before_run b USING (customer_id)
               GROUP BY cs.segment_id)
           SELECT count(*) FROM segmentation_bi.current_segment_centroids c JOIN truth t USING (segment_id)
           WHERE (c.feature = 'spending_score' AND abs(c.mean - t.spending) > 1e-9)
              OR (c.feature = 'age' AND abs(c.mean - t.age) > 1e-9)"""
    ).fetchone()[0]
    assert mismatches == 0
    params = conn.execute("SELECT params FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    assert params["training_sample_size"] == 1000
