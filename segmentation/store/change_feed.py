"""Who moved with each switch of the current run (sql/019_segment_changes.sql): the customers
whose segment differs between the run current before a switch and the run current after it,
kept when the switch is made, so that the BI change feed (segmentation_bi.current_segment_changes
and current_segment_transitions) reads a switch's rows by its key and never joins two runs.

- A publish keeps the changes its drift was measured from, when they were measured against the
  run current before it (the usual night): the session's temporary table of changes
  (segmentation.store.spells.compare or keep_changes), with no second comparison. They are what
  the run's customers_changed, customers_added and customers_removed count.
- A rollback or a promotion, and a publish whose drift was not measured against that run,
  compares the two runs' rows in SQL (spells.compare: their partitions of customer_segments, by
  (run_id, customer_id)).
- A first switch (no run current before) keeps no rows: every customer of the run entered, and
  the views read the run's own rows for it.

A switch whose changes are kept has a row in segmentation.change_feeds; one whose changes could
not be known (the previous run's rows gone) has none, and the views show nothing for it rather
than "nobody moved".

These functions run in their caller's transaction (see segmentation.db): the switch's."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from segmentation.store import partitions, spells
from segmentation.store.runs import Switched

log = logging.getLogger(__name__)


def record(conn: psycopg.Connection, switch: Switched, *, compared_with: int | None) -> int | None:
    """Keep the changes of a switch just recorded (runs.record_switch). compared_with: the run the
    session's changes were last measured against (spells.compare, keep_changes), reused when it is
    the run current before the switch; otherwise the two runs are compared here. Returns the run
    the session's changes are against now, for spells.enter."""
    before = switch.from_run_id
    if before is not None:
        if compared_with != before:
            if not (partitions.exists(conn, before) and partitions.exists(conn, switch.run_id)):
                log.warning(
                    "run %s's changes against run %s are not kept: run %s's rows are gone",
                    switch.run_id,
                    before,
                    before if not partitions.exists(conn, before) else switch.run_id,
                )
                return compared_with
            spells.compare(conn, switch.run_id, before)
            compared_with = before
        conn.execute(
            sql.SQL(
                """INSERT INTO segmentation.customer_changes (switch_id, customer_id, from_segment_id, to_segment_id)
                   SELECT %s, customer_id, segment_before, segment_now FROM {}
                   WHERE segment_before IS DISTINCT FROM segment_now"""
            ).format(spells.CHANGES),
            (switch.switch_id,),
        )
    conn.execute(
        """INSERT INTO segmentation.change_feeds (switch_id, segmentation, run_id, from_run_id)
           VALUES (%s, %s, %s, %s)""",
        (switch.switch_id, switch.segmentation, switch.run_id, before),
    )
    return compared_with


def forget(conn: psycopg.Connection, segmentation: str) -> int:
    """Delete the kept changes of the segmentation's switches whose run, or run current before,
    retention let go, but never those of its current switch (what the views read). Returns the
    number of customer rows deleted."""
    return conn.execute(
        """WITH gone AS (
               DELETE FROM segmentation.change_feeds AS f
               WHERE f.segmentation = %(s)s
                 AND f.switch_id <> (SELECT max(switch_id) FROM segmentation.current_run_log WHERE segmentation = %(s)s)
                 AND EXISTS (SELECT FROM segmentation.runs AS r
                             WHERE r.run_id IN (f.run_id, f.from_run_id) AND r.assignments_pruned_at IS NOT NULL)
               RETURNING f.switch_id)
           DELETE FROM segmentation.customer_changes WHERE switch_id IN (SELECT switch_id FROM gone)""",
        {"s": segmentation},
    ).rowcount


def erase(conn: psycopg.Connection, customer_keys: list[int]) -> int:
    """Delete the customers' rows of every switch (an erasure: segmentation.purge), by each
    segmentation's own keys of them (the purge's table purged_keys: a key of one segmentation may
    be another's customer). Returns the number of rows deleted."""
    return conn.execute(
        """DELETE FROM segmentation.customer_changes c USING segmentation.change_feeds f, purged_keys p
           WHERE c.customer_id = ANY(%s) AND f.switch_id = c.switch_id AND p.segmentation = f.segmentation
             AND p.customer_key = c.customer_id""",
        (customer_keys,),
    ).rowcount
