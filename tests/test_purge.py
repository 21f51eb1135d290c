"""Personal data: erasure on request from every copy in the schema, in one transaction that
BI readers see whole, and quarantined rows kept no longer than the runs they belong to."""

from __future__ import annotations

import psycopg
import pytest

from segmentation.cli import main
from segmentation.errors import SegmentationError
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.purge import purge
from segmentation.store.runs import RUN_LOCK_KEY
from support.bi_reader import assert_each_saw_one_complete_run, bi_reader
from support.processes import wait_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

FAST = {"n_clusters": 4, "n_init": 1, "max_customer_drop": 0.95}


def run(**params):
    return customer_segmentation(**{**FAST, **params}, return_state=True)


def published(**params) -> int:
    state = run(**params)
    assert state.is_completed(), state.message
    return state.result()["run_id"]


COPIES = {
    "assignments": "segmentation.customer_segments",
    "spells": "segmentation.segment_spells",
    "quarantine": "segmentation.quarantine",
    "history": "segmentation_bi.customer_segment_history",
    "changes": "segmentation.customer_changes",
}


def copies(conn, ids: list[int]) -> dict[str, int]:
    """Rows naming these customers, wherever the schema keeps them."""
    return {
        name: conn.execute(f"SELECT count(*) FROM {table} WHERE customer_id = ANY(%s)", (ids,)).fetchone()[0]
        for name, table in COPIES.items()
    }


def assert_figures_add_up(conn) -> None:
    """Every kept run's rows add up to its segment sizes and its n_customers."""
    for run_id, status, n, history in conn.execute(
        "SELECT run_id, status, n_customers, history_version FROM segmentation.runs "
        "WHERE status IN ('published', 'staged', 'rejected') AND assignments_pruned_at IS NULL"
    ).fetchall():
        rows = dict(
            conn.execute(
                "SELECT segment_id, count(*) FROM segmentation_bi.customer_segment_history WHERE run_id = %s GROUP BY 1"
                if history is not None
                else "SELECT segment_id, count(*) FROM segmentation.customer_segments WHERE run_id = %s GROUP BY 1",
                (run_id,),
            ).fetchall()
        )
        sizes = dict(
            conn.execute(
                "SELECT segment_id, n_customers FROM segmentation.segments WHERE run_id = %s AND n_customers > 0",
                (run_id,),
            ).fetchall()
        )
        assert rows == sizes and sum(sizes.values()) == n, (run_id, status)
        shares = conn.execute("SELECT sum(share) FROM segmentation.segments WHERE run_id = %s", (run_id,)).fetchone()
        assert shares[0] == pytest.approx(1.0)
    # Each segment's change is its size less its size in the run it was compared with.
    assert conn.execute(
        """SELECT count(*) FROM segmentation.segments s JOIN segmentation.runs r USING (run_id)
           JOIN segmentation.segments p ON p.run_id = r.previous_run_id AND p.segment_id = s.segment_id
           WHERE s.previous_n_customers IS DISTINCT FROM p.n_customers
              OR s.size_change IS DISTINCT FROM s.n_customers - p.n_customers"""
    ).fetchone() == (0,)


def test_purge_erases_every_copy_and_keeps_every_run_whole(conn, database_url, capsys):
    generate_customers(conn, 3000, seed=71)
    conn.execute("UPDATE customers SET age = NULL WHERE customer_id IN (7, 8)")  # quarantined
    first = published()
    conn.execute("DELETE FROM customers WHERE customer_id % 10 = 0")  # 20 leaves with the second run
    conn.execute("UPDATE customers SET spending_score = 101 - spending_score WHERE customer_id % 7 = 0")
    second = published()
    staged = run(publish=False).result()["run_id"]
    ids = [5, 7, 20, 999_999]
    before = copies(conn, ids)
    # Customer 20 left with the second run: a row of its change feed.
    assert before["assignments"] == 2 and before["spells"] >= 1 and before["quarantine"] == 3
    assert before["changes"] >= 1
    done = purge(conn, ids)
    assert (done.customers, done.assignment_rows, done.spell_rows, done.quarantine_rows, done.change_rows) == (
        4,
        before["assignments"],
        before["spells"],
        before["quarantine"],
        before["changes"],
    )
    assert copies(conn, ids) == {"assignments": 0, "spells": 0, "quarantine": 0, "history": 0, "changes": 0}
    assert conn.execute("SELECT customers, assignment_rows FROM segmentation.purges").fetchall() == [(4, 2)]
    assert_figures_add_up(conn)
    n_first, n_second, n_staged = (
        conn.execute("SELECT n_customers FROM segmentation.runs WHERE run_id = %s", (r,)).fetchone()[0]
        for r in (first, second, staged)
    )
    assert (n_first, n_second, n_staged) == (2998 - 2, 2698 - 1, 2698 - 1)  # 5 and 20; 5; 5
    quarantined = conn.execute("SELECT n_quarantined FROM segmentation.runs WHERE run_id = %s", (first,)).fetchone()
    assert quarantined == (1,)  # customer 8

    # Customer 5 is still in the source: the next run brings it back, and its drift is exact.
    conn.execute(
        "CREATE TABLE before_next AS SELECT customer_id, segment_id FROM segmentation_bi.current_customer_segments"
    )
    following = published()
    drift = conn.execute(
        "SELECT previous_run_id, customers_compared, customers_added, customers_removed "
        "FROM segmentation.runs WHERE run_id = %s",
        (following,),
    ).fetchone()
    expected = conn.execute(
        """SELECT count(*) FILTER (WHERE o.customer_id IS NOT NULL AND n.customer_id IS NOT NULL),
                  count(*) FILTER (WHERE o.customer_id IS NULL), count(*) FILTER (WHERE n.customer_id IS NULL)
           FROM before_next o FULL JOIN segmentation_bi.current_customer_segments n USING (customer_id)"""
    ).fetchone()
    assert drift == (second, *expected) and expected[1] == 1
    assert_figures_add_up(conn)

    # BI readers see every run whole while customers are erased.
    with bi_reader(database_url) as observations, psycopg.connect(database_url, autocommit=True) as writer:
        for i in range(8):
            purge(writer, list(range(100 + 50 * i, 150 + 50 * i)))
            seen = len(observations)
            wait_for(lambda seen=seen: len(observations) > seen + 1, what="the reader to read the views again")
    assert_each_saw_one_complete_run(observations)
    assert_figures_add_up(conn)

    assert main(["purge", "--customer-id", "11", "--customer-id", "12"]) == 0
    out = capsys.readouterr().out
    # In the current run and the staged one.
    assert "erased 2 customers from the segmentation schema: 4 assignment rows" in out
    assert "erase them from the source table too" in out
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        with pytest.raises(SegmentationError, match="a segmentation run is in progress"):
            purge(conn, [13])
        other.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))


def test_quarantined_rows_go_with_their_run(conn, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_KEEP_PUBLISHED_RUNS", "1")
    generate_customers(conn, 2000, seed=72)
    conn.execute("UPDATE customers SET age = NULL WHERE customer_id <= 5")
    first = published()
    failed = []
    for _ in range(2):  # fails after quarantining: more clusters than customers
        state = run(n_clusters=2500)
        assert state.is_failed() and "clusters" in state.message
        failed.append(conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0])
    old_failed, recent_failed = failed
    conn.execute(
        "UPDATE segmentation.runs SET finished_at = now() - interval '31 days' WHERE run_id = %s", (old_failed,)
    )
    quarantined = dict(conn.execute("SELECT run_id, count(*) FROM segmentation.quarantine GROUP BY 1").fetchall())
    assert quarantined == {first: 5, old_failed: 5, recent_failed: 5}
    second = published()
    third = published()
    # The first run's assignments were pruned, the old failed run ended over 30 days ago: their
    # rows are gone. The recent failed run's, and those of the current run and the one before, stay.
    kept = dict(conn.execute("SELECT run_id, count(*) FROM segmentation.quarantine GROUP BY 1").fetchall())
    assert kept == {recent_failed: 5, second: 5, third: 5}
