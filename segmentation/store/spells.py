"""The history of assignments as segment spells (sql/007_segment_spells.sql): a type 2 slowly
changing dimension, so that history grows with change, not with runs.

Each segmentation has its own history (sql/014): its runs' history versions count 1, 2, 3, ...
and its spells are its own. A run enters its segmentation's history when it becomes published,
and gets the next history version there. What it adds is its changes against the newest history
run of its segmentation: one row in segmentation.segment_spells
per customer who moved, left or arrived, naming the segment the customer was in until then
(NULL for one who arrives). The spells still running are the newest history run's own rows in
customer_segments; any other history run's rows are dropped by retention and can be rebuilt
from the spells (`rebuild`), without their distances.

The comparison that finds the changes is the one drift needs too: `compare` keeps the changed
rows in a temporary table of the run's session, and `enter` uses them when they were measured
against the newest history run (the usual night: the current run is the newest).

These functions run in their caller's transaction (see segmentation.db)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows
from segmentation.core.comparison import ABSENT
from segmentation.store import partitions

_CHANGE_FIELDS = [("customer_id", "int8"), ("segment_before", "int4"), ("segment_now", "int4")]
# The session's changes (compare, keep_changes): its own, never a table of that name elsewhere.
# segmentation.store.change_feed keeps them for the switch, in the same transaction.
CHANGES = sql.Identifier("pg_temp", "run_changes")


@dataclass(frozen=True)
class HistoryRun:
    run_id: int
    version: int


def newest(conn: psycopg.Connection, segmentation: str) -> HistoryRun | None:
    """The newest run in the segmentation's history: its rows are the spells still running."""
    row = conn.execute(
        "SELECT run_id, history_version FROM segmentation.runs WHERE segmentation = %(s)s "
        "AND history_version = (SELECT max(history_version) FROM segmentation.runs WHERE segmentation = %(s)s)",
        {"s": segmentation},
    ).fetchone()
    return None if row is None else HistoryRun(int(row[0]), int(row[1]))


def version_of(conn: psycopg.Connection, run_id: int) -> int | None:
    row = conn.execute("SELECT history_version FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _segmentation_of(conn: psycopg.Connection, run_id: int) -> str:
    row = conn.execute("SELECT segmentation FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()
    if row is None:
        raise ValueError(f"there is no run {run_id}")
    return str(row[0])


def compare(conn: psycopg.Connection, run_id: int, against: int) -> list[tuple[int | None, int | None, int]]:
    """Customer by customer, run_id's rows against another run's: keep every customer whose
    segment differs (moved, or in one run only) in the session's temporary table, and return
    their counts per (segment before, segment now); None for a customer in one run only."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(CHANGES))
    # The new run's table has no statistics yet, so the planner guesses billions of rows and
    # turns on JIT (0.15 s of compiling) and sorts that spill to disk; these settings are for
    # the caller's transaction only.
    conn.execute("SET LOCAL jit = off")
    conn.execute("SET LOCAL work_mem = '256MB'")
    conn.execute(
        sql.SQL(
            """CREATE TEMPORARY TABLE {changes} AS
               SELECT coalesce(o.customer_id, n.customer_id) AS customer_id,
                      o.segment_id AS segment_before, n.segment_id AS segment_now
               FROM {old} AS o FULL JOIN {new} AS n USING (customer_id)
               WHERE o.segment_id IS DISTINCT FROM n.segment_id"""
        ).format(changes=CHANGES, old=partitions.partition_name(against), new=partitions.partition_name(run_id))
    )
    return [
        (before, now, int(n))
        for before, now, n in conn.execute(
            sql.SQL("SELECT segment_before, segment_now, count(*) FROM {} GROUP BY 1, 2").format(CHANGES)
        )
    ]


def keep_changes(conn: psycopg.Connection, ids: np.ndarray, before: np.ndarray, now: np.ndarray) -> None:
    """What `compare` keeps, from a comparison made in memory (segmentation.core.comparison):
    the changed customers, with their segment before and now (ABSENT for none, NULL here)."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(CHANGES))
    conn.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} (customer_id bigint, segment_before integer, segment_now integer)").format(
            CHANGES
        )
    )
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(CHANGES)) as copy:
        copy.write(HEADER)
        copy.write(encode_rows(_CHANGE_FIELDS, {"customer_id": ids, "segment_before": before, "segment_now": now}))
        copy.write(TRAILER)
    for column in ("segment_before", "segment_now"):
        conn.execute(
            sql.SQL("UPDATE {table} SET {c} = NULL WHERE {c} = %s").format(table=CHANGES, c=sql.Identifier(column)),
            (ABSENT,),
        )


def enter(conn: psycopg.Connection, run_id: int, *, compared_with: int | None) -> int:
    """Add run_id to the history as its newest run, and return its version. compared_with:
    the run the session's last `compare` was against, whose changes are reused when it is the
    newest history run of its segmentation; otherwise the run is compared here."""
    segmentation = _segmentation_of(conn, run_id)
    latest = newest(conn, segmentation)
    if latest is None:
        version = 1
    else:
        version = latest.version + 1
        if compared_with != latest.run_id:
            compare(conn, run_id, latest.run_id)
        conn.execute(
            sql.SQL(
                """INSERT INTO segmentation.segment_spells (customer_id, ended_version, segment_id, segmentation)
                   SELECT customer_id, %s, segment_before, %s FROM {}"""
            ).format(CHANGES),
            (version, segmentation),
        )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(CHANGES))
    conn.execute("UPDATE segmentation.runs SET history_version = %s WHERE run_id = %s", (version, run_id))
    return version


def discard_changes(conn: psycopg.Connection) -> None:
    """Drop the session's changes (compare, keep_changes), once nothing needs them."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(CHANGES))


def forget(conn: psycopg.Connection, segmentation: str) -> int:
    """Delete the segmentation's spells that ended at or before its oldest history run still
    kept: no kept run can be in them. Returns the number of rows deleted."""
    return conn.execute(
        """DELETE FROM segmentation.segment_spells
           WHERE segmentation = %(s)s
             AND ended_version <= (SELECT min(history_version) FROM segmentation.runs
                                   WHERE segmentation = %(s)s AND history_version IS NOT NULL
                                     AND assignments_pruned_at IS NULL)""",
        {"s": segmentation},
    ).rowcount


def rebuild(conn: psycopg.Connection, run_id: int) -> int:
    """Write run_id's rows again into its own table, from the history (distance NULL: the
    history does not keep distances). A customer's segment after the run is that of the
    customer's first spell ending after it, or, with none, of the newest history run. The
    caller attaches the table (partitions.attach) in a transaction of its own. Returns the
    number of rows."""
    version = version_of(conn, run_id)
    segmentation = _segmentation_of(conn, run_id)
    latest = newest(conn, segmentation)
    if version is None or latest is None:
        raise ValueError(f"run {run_id} is not in the history")
    table = partitions.create_table(conn, run_id)
    rows = conn.execute(
        sql.SQL(
            """INSERT INTO {table} (run_id, customer_id, segment_id, distance)
               SELECT %(run_id)s, customer_id, segment_id, NULL::double precision FROM (
                   SELECT DISTINCT ON (customer_id) customer_id, segment_id
                   FROM segmentation.segment_spells
                   WHERE segmentation = %(segmentation)s AND ended_version > %(version)s
                   ORDER BY customer_id, ended_version) AS ended_later
               WHERE segment_id IS NOT NULL
               UNION ALL
               SELECT %(run_id)s, l.customer_id, l.segment_id, NULL::double precision FROM {latest} AS l
               WHERE NOT EXISTS (SELECT FROM segmentation.segment_spells AS sp
                                 WHERE sp.customer_id = l.customer_id AND sp.segmentation = %(segmentation)s
                                   AND sp.ended_version > %(version)s)"""
        ).format(table=table, latest=partitions.partition_name(latest.run_id)),
        {"run_id": run_id, "version": version, "segmentation": segmentation},
    ).rowcount
    partitions.add_key(conn, run_id)
    return rows
