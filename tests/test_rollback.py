"""Rollback and staged runs: a kept run made current again, without retraining, in one switch
that BI readers see all at once; every switch recorded; clear refusals; a staged run kept but
never current until it is promoted."""

from __future__ import annotations

import psycopg
import pytest

from segmentation.cli import main
from segmentation.errors import SegmentationError
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.rollback import make_current
from segmentation.store.runs import RUN_LOCK_KEY
from support.artifacts import artifacts_of
from support.bi_reader import assert_current_run, assert_each_saw_one_complete_run, bi_reader
from support.docs import documented_sql
from support.processes import wait_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

FAST = {"n_clusters": 4, "n_init": 1, "max_customer_drop": 0.95}


def run(**params):
    return customer_segmentation(**FAST, **params, return_state=True)


def published(**params) -> int:
    state = run(**params)
    assert state.is_completed(), state.message
    return state.result()["run_id"]


def log(conn) -> list[tuple]:
    return conn.execute(
        "SELECT run_id, from_run_id, action, reason FROM segmentation.current_run_log ORDER BY switch_id"
    ).fetchall()


def test_rollback_makes_the_previous_run_current_and_the_next_run_compares_with_it(conn, capsys):
    generate_customers(conn, 3000, seed=41)
    first = published()
    conn.execute("CREATE TABLE first_night AS TABLE customers")
    conn.execute("DELETE FROM customers WHERE customer_id > 2000")  # the next night loads a third less
    second = published()
    assert main(["rollback", "--reason", "the load of run 2 was cut short"]) == 0
    out = capsys.readouterr().out
    assert f"run {first} is current (run {second} was): rollback" in out
    assert f"by rollback from run {second}: the load of run 2 was cut short" in out
    assert "3000 customers in 4 segments" in out
    assert_current_run(conn, first)
    assert log(conn)[-1] == (first, second, "rollback", "the load of run 2 was cut short")
    # The run keeps its own published_at; current_since says when it became current again.
    published_at, current_since, switched_at, second_published = conn.execute(
        """SELECT c.published_at, c.current_since,
                  (SELECT max(switched_at) FROM segmentation.current_run_log),
                  (SELECT published_at FROM segmentation.runs WHERE run_id = %s)
           FROM segmentation_bi.current_run c""",
        (second,),
    ).fetchone()
    assert current_since == switched_at and published_at < second_published < current_since
    assert conn.execute("SELECT array_agg(DISTINCT status) FROM segmentation.runs").fetchone()[0] == ["published"]
    # `show` says how the run became current.
    assert main(["show"]) == 0
    assert f"by rollback from run {second}: the load of run 2 was cut short" in capsys.readouterr().out

    # The next run compares with the run that is current after the rollback: on the same data
    # as that run, it is an exact rerun.
    conn.execute("INSERT INTO customers SELECT * FROM first_night WHERE customer_id > 2000")
    third = run().result()
    assert conn.execute(
        "SELECT previous_run_id FROM segmentation.runs WHERE run_id = %s", (third["run_id"],)
    ).fetchone() == (first,)
    assert third["churn"] == 0.0
    # A rollback without --to goes back to the run current before the current one.
    assert main(["rollback", "--reason", "back again"]) == 0
    capsys.readouterr()
    assert_current_run(conn, first)


def test_bi_readers_see_one_complete_run_during_rollbacks(conn, database_url):
    generate_customers(conn, 20_000, seed=42)
    big = published()
    conn.execute("DELETE FROM customers WHERE customer_id % 4 = 0")
    small = published()
    with bi_reader(database_url) as observations, psycopg.connect(database_url, autocommit=True) as writer:
        for i in range(12):
            make_current(writer, run_id=big if i % 2 == 0 else small, reason=f"switch {i}")
            seen = len(observations)
            wait_for(lambda seen=seen: len(observations) > seen + 1, what="the reader to read the views again")
    assert {o[0] for o in observations} == {big, small} and len(observations) > 12
    assert_each_saw_one_complete_run(observations)


def test_refusals_are_one_line_each(conn, database_url, monkeypatch):
    generate_customers(conn, 2000, seed=43)
    first = published()
    failed = run(source_table="public.nosuch")
    failed_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    assert failed.is_failed()
    rejected = run(min_silhouette=0.99)
    assert rejected.is_failed() and "quality gate rejected" in rejected.message
    rejected_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]

    def refused(run_id, message, **options):
        with pytest.raises(SegmentationError, match=message):
            make_current(conn, run_id=run_id, reason="checking", **options)

    refused(None, f"run {first} is the only run that has been current")
    refused(999, "there is no run 999")
    refused(failed_id, f"run {failed_id} is failed: source table public.nosuch does not exist")
    refused(first, f"run {first} is already current")
    refused(
        rejected_id,
        f"run {rejected_id} was rejected by the quality gate \\(silhouette .* below the minimum 0.99\\); .*--force",
    )
    with pytest.raises(SegmentationError, match="say why with --reason"):
        make_current(conn, run_id=rejected_id, reason="  ", force=True)
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))  # a run in progress
        refused(rejected_id, "a segmentation run is in progress", force=True)
        # Released now: a closed session's locks go only when its backend has exited.
        other.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))
    # A run from before models were kept (its model rows gone here) cannot score: only with --force.
    conn.execute("CREATE TABLE kept_model AS SELECT * FROM segmentation.run_models WHERE run_id = %s", (rejected_id,))
    conn.execute("DELETE FROM segmentation.run_models WHERE run_id = %s", (rejected_id,))
    refused(rejected_id, f"run {rejected_id} completed before models were kept", force=False)
    conn.execute("INSERT INTO segmentation.run_models SELECT * FROM kept_model")
    # With --force, a rejected run is promoted: current, published and marked forced.
    make_current(conn, run_id=rejected_id, reason="checked by hand", force=True)
    assert_current_run(conn, rejected_id)
    assert conn.execute(
        "SELECT status, forced FROM segmentation.runs WHERE run_id = %s", (rejected_id,)
    ).fetchone() == (
        "published",
        True,
    )
    assert log(conn)[-1] == (rejected_id, first, "promote", "checked by hand")
    # Retention prunes the oldest run's assignments: it cannot be made current any more.
    monkeypatch.setenv("SEGMENTATION_KEEP_PUBLISHED_RUNS", "1")
    latest = published()
    assert conn.execute(
        "SELECT assignments_pruned_at IS NOT NULL FROM segmentation.runs WHERE run_id = %s", (first,)
    ).fetchone()[0]
    refused(first, f"run {first}'s per-customer assignments are no longer kept")
    assert_current_run(conn, latest)


def test_a_staged_run_is_kept_but_not_current_until_promoted(conn, capsys):
    generate_customers(conn, 3000, seed=44)
    first = published()
    conn.execute("DELETE FROM customers WHERE customer_id % 5 = 0")
    state = run(publish=False)
    assert state.is_completed()
    staged = state.result()
    assert staged["status"] == "staged" and staged["n_customers"] == 2400
    assert conn.execute(
        "SELECT status, published_at FROM segmentation.runs WHERE run_id = %s", (staged["run_id"],)
    ).fetchone() == (
        "staged",
        None,
    )
    assert_current_run(conn, first)  # nothing BI reads has changed
    summary = artifacts_of(state.state_details.flow_run_id)["segmentation-summary"].data
    assert f"# Segmentation run {staged['run_id']}: staged" in summary
    assert (
        f"not published: staged, kept but not current; make it current with: segmentation promote {staged['run_id']}"
        in summary
    )
    assert "## Segments" in summary
    assert main(["runs"]) == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "staged" in listing[str(staged["run_id"])] and listing[str(staged["run_id"])].rstrip().endswith("yes")
    assert "current" in listing[str(first)]
    # The next run still compares with the current run, not the staged one.
    assert main(["promote", str(staged["run_id"]), "--reason", "reviewed the k=4 segments"]) == 0
    assert f"run {staged['run_id']} is current (run {first} was): promote" in capsys.readouterr().out
    assert_current_run(conn, staged["run_id"])
    status, published_at = conn.execute(
        "SELECT status, published_at IS NOT NULL FROM segmentation.runs WHERE run_id = %s", (staged["run_id"],)
    ).fetchone()
    assert (status, published_at) == ("published", True)
    assert log(conn)[-1] == (staged["run_id"], first, "promote", "reviewed the k=4 segments")


def test_run_no_publish_from_the_command_line(conn, capsys):
    generate_customers(conn, 1500, seed=45)
    assert main(["run", "--k", "3", "--no-publish"]) == 0
    out = capsys.readouterr().out
    assert "staged" in out and "not published" in out
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_run").fetchone()[0] == 0
    assert main(["show"]) == 1
    assert "no published run yet" in capsys.readouterr().out


def test_segment_and_run_history_count_the_run_current_at_the_end_of_each_day_once(conn, capsys):
    """Two runs and a rollback on one day: segment_history has a period per switch, and the
    docs' end-of-day query counts each segment of the run current at the day's end once."""
    generate_customers(conn, 3000, seed=43)
    first = published()
    conn.execute("DELETE FROM customers WHERE customer_id > 2500")
    second = published()
    assert main(["rollback", "--reason", "the second load was cut short"]) == 0
    capsys.readouterr()
    periods = conn.execute(
        "SELECT run_id, current_from, current_to, action FROM segmentation_bi.run_history ORDER BY current_from"
    ).fetchall()
    assert [(p[0], p[3]) for p in periods] == [(first, "publish"), (second, "publish"), (first, "rollback")]
    assert periods[0][2] == periods[1][1] and periods[1][2] == periods[2][1] and periods[2][2] is None
    sizes = conn.execute(
        "SELECT run_id, segment_id, n_customers FROM segmentation_bi.segment_history ORDER BY current_from, segment_id"
    ).fetchall()
    assert len(sizes) == 12 and sum(s[2] for s in sizes if s[0] == second) == 2500
    # Today, as of its end: the first run's segments, once each (not three periods' worth).
    today = conn.execute(documented_sql("bi.md", "Sizes and quality over time")).fetchall()
    last_day = max(r[0] for r in today)
    at_end = [(r[1], r[3]) for r in today if r[0] == last_day]
    expected = conn.execute(
        "SELECT segment_id, n_customers FROM segmentation_bi.current_segments ORDER BY segment_id"
    ).fetchall()
    assert at_end == expected and sum(n for _, n in at_end) == 3000
