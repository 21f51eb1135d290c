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

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.segmentations import DEFAULT, view_name
from segmentation.source import customer_keys
from segmentation.store import change_feed, runs

_INTEGER = re.compile(r"^[+-]?\d{1,19}$")


@dataclass(frozen=True)
class Purge:
    purge_id: int
    customers: int
    assignment_rows: int
    spell_rows: int
    quarantine_rows: int
    change_rows: int = 0


def _spoken(given: Sequence[str], id_type: str | None) -> list[str] | list[int]:
    """The given ids as a segmentation whose ids are of id_type has them: integers for integer
    ids, canonical text for uuids (lowercase, with hyphens), else as given; those that cannot be
    such an id are no customer of it."""
    if id_type is None:
        return sorted({int(g) for g in given if _INTEGER.fullmatch(g)})
    if id_type == "uuid":
        found = []
        for g in given:
            try:
                found.append(str(uuid.UUID(g)))
            except ValueError:
                continue
        return sorted(set(found))
    return sorted(set(given))


def purge(conn: psycopg.Connection, customer_ids: Sequence[str | int]) -> Purge:
    """Erase the customers with these ids, as the source has them (integers, text or uuids), from
    every segmentation."""
    given = sorted({str(c).strip() for c in customer_ids} - {""})
    if not given:
        raise SegmentationError("name the customers to erase with --customer-id ID (repeatable)")
    with conn.transaction():
        names = [row[0] for row in conn.execute("SELECT name FROM segmentation.segmentations ORDER BY name")]
        for name in names:
            if not scalar(conn, "SELECT pg_try_advisory_xact_lock(%s)", (runs.run_lock_key(name),)):
                of = "" if name == DEFAULT else f" of segmentation {name}"
                raise SegmentationError(
                    f"a segmentation run{of} is in progress; wait for it to finish, then purge again"
                )
        # Each segmentation's keys of the erased customers (segmentation.source.customer_keys), for
        # every id type its runs read ids as: its rows hold keys, and its views speak its ids.
        conn.execute(
            "CREATE TEMPORARY TABLE purged_keys (segmentation text, id_type text, customer_key bigint) ON COMMIT DROP"
        )
        kinds = conn.execute(
            """SELECT DISTINCT s.name, r.id_type FROM segmentation.segmentations s
               JOIN segmentation.runs r ON r.segmentation = s.name
               UNION SELECT name, id_type FROM segmentation.segmentations"""
        ).fetchall()
        for name, id_type in kinds:
            spoken = _spoken(given, id_type)
            conn.execute(
                sql.SQL("INSERT INTO purged_keys SELECT %s, %s, {} FROM unnest(%s::{}[]) AS g(id)").format(
                    customer_keys.key(sql.SQL("g.id"), id_type),
                    sql.SQL("bigint" if id_type is None else "text"),
                ),
                (name, id_type, spoken),
            )
        view_type: dict[str, str | None] = dict(conn.execute("SELECT name, id_type FROM segmentation.segmentations"))
        # Where each erased customer was, per kept run, before anything goes: each
        # segmentation's history for its published runs, the run's own rows for the others
        # (staged, rejected).
        histories = [
            sql.SQL(
                "SELECT run_id, segment_id, count(*) AS n FROM {} WHERE customer_id{} = ANY({}) GROUP BY 1, 2"
            ).format(
                sql.Identifier("segmentation_bi", view_name(name, "customer_segment_history")),
                sql.SQL("" if view_type[name] is None else "::text"),
                sql.Literal(_spoken(given, view_type[name])),
            )
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
                   JOIN purged_keys p ON p.segmentation = r.segmentation AND p.id_type IS NOT DISTINCT FROM r.id_type
                                     AND p.customer_key = cs.customer_id
                   GROUP BY 1, 2"""
            ).format(histories=sql.SQL(" UNION ALL ").join(histories))
        )
        ids = [k for (k,) in conn.execute("SELECT DISTINCT customer_key FROM purged_keys")]
        in_runs = """SELECT p.customer_key FROM purged_keys p JOIN segmentation.runs r
                     ON p.segmentation = r.segmentation AND p.id_type IS NOT DISTINCT FROM r.id_type
                     WHERE r.run_id = {table}.run_id"""
        # Each run's rows by the keys of its own segmentation and id type: a key of one may be
        # another's customer.
        assignment_rows = conn.execute(
            sql.SQL(
                "DELETE FROM segmentation.customer_segments WHERE customer_id = ANY(%s) AND customer_id IN ({})"
            ).format(sql.SQL(in_runs.format(table="customer_segments"))),
            (ids,),
        ).rowcount
        spell_rows = conn.execute(
            """DELETE FROM segmentation.segment_spells sp USING purged_keys p
               WHERE sp.customer_id = ANY(%s) AND p.segmentation = sp.segmentation AND p.customer_key = sp.customer_id""",
            (ids,),
        ).rowcount
        conn.execute(
            """DELETE FROM segmentation.customer_ids m USING purged_keys p
               WHERE p.segmentation = m.segmentation AND p.id_type IS NOT NULL AND p.customer_key = m.customer_key"""
        )
        change_rows = change_feed.erase(conn, ids)
        quarantine_rows = sum(
            n
            for (n,) in conn.execute(
                sql.SQL(
                    """WITH gone AS (DELETE FROM segmentation.quarantine WHERE customer_id = ANY(%s)
                                     AND customer_id IN ({}) RETURNING run_id),
                        per_run AS (SELECT run_id, count(*) AS n FROM gone GROUP BY run_id)
                   UPDATE segmentation.runs r SET n_quarantined = r.n_quarantined - p.n
                   FROM per_run p WHERE p.run_id = r.run_id RETURNING p.n"""
                ).format(sql.SQL(in_runs.format(table="quarantine"))),
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
            (len(given), assignment_rows, spell_rows, quarantine_rows, change_rows),
        )
    return Purge(int(purge_id), len(given), assignment_rows, spell_rows, quarantine_rows, change_rows)
