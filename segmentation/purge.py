"""Erasing customers from the segmentation schema on request (right to erasure): every kept
run's assignments, the history's spells, the switches' kept changes (who moved) and the
quarantined source rows, of every segmentation, in one transaction, recorded in
segmentation.purges as counts only.

The runs' figures follow, in the same transaction: each kept run's segment sizes and shares,
its n_customers and n_quarantined lose the erased customers, so a BI reader still sees every
run whole (its rows add up to its figures) before and after, and the next run's drift, which
counts on the current run's sizes, stays exact. Aggregates (centroids, statistics) stay: they
hold no one's data.

The source table is not touched: erase the customer there too, or the next run brings them back.

Who commits: purge, in one transaction of its own, under every segmentation's run lock (see
segmentation.db)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.segmentations import DEFAULT, view_name
from segmentation.store import change_feed, runs


@dataclass(frozen=True)
class Purge:
    purge_id: int
    customers: int
    assignment_rows: int
    spell_rows: int
    quarantine_rows: int
    change_rows: int = 0


def purge(conn: psycopg.Connection, customer_ids: Sequence[int]) -> Purge:
    ids = sorted({int(c) for c in customer_ids})
    if not ids:
        raise SegmentationError("name the customers to erase with --customer-id ID (repeatable)")
    with conn.transaction():
        names = [row[0] for row in conn.execute("SELECT name FROM segmentation.segmentations ORDER BY name")]
        for name in names:
            if not scalar(conn, "SELECT pg_try_advisory_xact_lock(%s)", (runs.run_lock_key(name),)):
                of = "" if name == DEFAULT else f" of segmentation {name}"
                raise SegmentationError(
                    f"a segmentation run{of} is in progress; wait for it to finish, then purge again"
                )
        # Where each erased customer was, per kept run, before anything goes: each
        # segmentation's history for its published runs, the run's own rows for the others
        # (staged, rejected).
        histories = [
            sql.SQL(
                "SELECT run_id, segment_id, count(*) AS n FROM {} WHERE customer_id = ANY(%(ids)s) GROUP BY 1, 2"
            ).format(sql.Identifier("segmentation_bi", view_name(name, "customer_segment_history")))
            for name in names
        ]
        conn.execute(
            sql.SQL(
                """CREATE TEMPORARY TABLE purged_members ON COMMIT DROP AS
                   {histories}
                   UNION ALL
                   SELECT cs.run_id, cs.segment_id, count(*)
                   FROM segmentation.customer_segments cs
                   JOIN segmentation.runs r ON r.run_id = cs.run_id AND r.history_version IS NULL
                   WHERE cs.customer_id = ANY(%(ids)s)
                   GROUP BY 1, 2"""
            ).format(histories=sql.SQL(" UNION ALL ").join(histories)),
            {"ids": ids},
        )
        assignment_rows = conn.execute(
            "DELETE FROM segmentation.customer_segments WHERE customer_id = ANY(%s)", (ids,)
        ).rowcount
        spell_rows = conn.execute(
            "DELETE FROM segmentation.segment_spells WHERE customer_id = ANY(%s)", (ids,)
        ).rowcount
        change_rows = change_feed.erase(conn, ids)
        quarantine_rows = sum(
            n
            for (n,) in conn.execute(
                """WITH gone AS (DELETE FROM segmentation.quarantine WHERE customer_id = ANY(%s) RETURNING run_id),
                        per_run AS (SELECT run_id, count(*) AS n FROM gone GROUP BY run_id)
                   UPDATE segmentation.runs r SET n_quarantined = r.n_quarantined - p.n
                   FROM per_run p WHERE p.run_id = r.run_id RETURNING p.n""",
                (ids,),
            )
        )
        conn.execute(
            """UPDATE segmentation.segments s SET n_customers = s.n_customers - m.n, size_change = s.size_change - m.n
               FROM purged_members m WHERE m.run_id = s.run_id AND m.segment_id = s.segment_id"""
        )
        # The runs that compared themselves with an adjusted run: their previous sizes follow.
        conn.execute(
            """UPDATE segmentation.segments s
               SET previous_n_customers = s.previous_n_customers - m.n, size_change = s.size_change + m.n
               FROM purged_members m JOIN segmentation.runs r ON r.previous_run_id = m.run_id
               WHERE s.run_id = r.run_id AND s.segment_id = m.segment_id AND s.previous_n_customers IS NOT NULL"""
        )
        conn.execute(
            """UPDATE segmentation.runs r SET n_customers = r.n_customers - m.n
               FROM (SELECT run_id, sum(n) AS n FROM purged_members GROUP BY run_id) m WHERE m.run_id = r.run_id"""
        )
        conn.execute(
            """UPDATE segmentation.segments s SET share = s.n_customers::float8 / nullif(t.total, 0)
               FROM (SELECT run_id, sum(n_customers) AS total FROM segmentation.segments
                     WHERE run_id IN (SELECT run_id FROM purged_members) GROUP BY run_id) t
               WHERE t.run_id = s.run_id"""
        )
        purge_id = scalar(
            conn,
            """INSERT INTO segmentation.purges (customers, assignment_rows, spell_rows, quarantine_rows, change_rows)
               VALUES (%s, %s, %s, %s, %s) RETURNING purge_id""",
            (len(ids), assignment_rows, spell_rows, quarantine_rows, change_rows),
        )
    return Purge(int(purge_id), len(ids), assignment_rows, spell_rows, quarantine_rows, change_rows)
