"""Retention: how much per-customer history is kept, and in what form. Each segmentation has its
own: a run applies it to its own segmentation's runs, never to another's, which may be running.

- Runs older than the newest SEGMENTATION_KEEP_PUBLISHED_RUNS complete runs are let go
  (partitions.to_prune): their scoring function is dropped, they are marked pruned, the spells
  that ended at or before the oldest history run still kept are deleted, so are the kept
  changes of the switches to or from them (segmentation.store.change_feed; never the current
  switch's), and their table, if any, is dropped.
- History runs still kept, other than the newest and the current run, lose their own table:
  the spells answer for them (segmentation.store.spells), and rebuild it if one is made current.
- Quarantined source rows (personal data) go with their run's assignments, and those of failed
  and rejected runs after SEGMENTATION_QUARANTINE_KEEP_DAYS days (`forget_quarantine`, also
  applied when a run fails, so failing nights do not pile them up).

Who commits: each step is its own statement or transaction, in autocommit (DETACH ...
CONCURRENTLY cannot run inside a transaction block); what is not done now, the next run does."""

from __future__ import annotations

import psycopg

from segmentation.store import change_feed, partitions, runs, scoring, spells


def prune(conn: psycopg.Connection, keep: int, quarantine_days: int, segmentation: str) -> list[int]:
    """Apply the segmentation's retention; returns the runs let go now."""
    old = partitions.to_prune(conn, keep, segmentation)
    with conn.transaction():
        # What needs no lock a BI session could hold up goes first, whatever happens to the
        # tables below: the runs are let go (their model and scoring function too), and their
        # spells and quarantined rows deleted.
        for run_id in old:
            scoring.drop(conn, run_id)
            runs.mark_pruned(conn, run_id)
        spells.forget(conn, segmentation)
        change_feed.forget(conn, segmentation)
        forget_quarantine(conn, quarantine_days)
    # Never queue for long behind a BI session: a blocked DETACH would hold up every reader
    # that arrives after it. A table not dropped now is dropped by the next run.
    conn.execute("SET lock_timeout = '10s'")
    try:
        for run_id in partitions.not_needed(conn, segmentation):
            partitions.detach_and_drop(conn, run_id)
    finally:
        conn.execute("RESET lock_timeout")
    return old


def forget_quarantine(conn: psycopg.Connection, days: int) -> int:
    """Delete the quarantined rows of runs whose assignments are gone, and of failed and
    rejected runs that ended more than `days` days ago. Returns the number of rows deleted."""
    return conn.execute(
        """DELETE FROM segmentation.quarantine q USING segmentation.runs r
           WHERE r.run_id = q.run_id
             AND (r.assignments_pruned_at IS NOT NULL
                  OR (r.status IN ('failed', 'rejected')
                      AND coalesce(r.finished_at, r.started_at) < now() - make_interval(days => %s)))""",
        (days,),
    ).rowcount
