"""Run bookkeeping and publishing in the segmentation schema.

A run holds a session-level advisory lock on its connection from start to finish, so only
one run works at a time; if its process dies, PostgreSQL drops the connection and the lock.
Its assignments go into a table of its own that becomes a partition of
customer_segments; publishing is one UPDATE of the run's status, so BI readers switch
from the old run to the new one in a single commit."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows
from segmentation.core.model import KCandidate
from segmentation.errors import SegmentationError

PUBLISH_LOCK_KEY = 0x5E6_0002
ASSIGNMENT_FIELDS = [("run_id", "int8"), ("customer_id", "int8"), ("segment_id", "int4"), ("distance", "float8")]
ABANDONED = "abandoned: the process running it stopped before it finished"


def partition_name(run_id: int) -> sql.Identifier:
    return sql.Identifier("segmentation", f"customer_segments_run_{int(run_id)}")


def acquire_run_lock(conn: psycopg.Connection) -> None:
    locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (PUBLISH_LOCK_KEY,)).fetchone()[0]
    conn.commit()
    if not locked:
        row = conn.execute(
            "SELECT run_id, started_at FROM segmentation.runs WHERE status = 'running' ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        conn.commit()
        which = f" (run {row[0]}, started {row[1]:%Y-%m-%d %H:%M:%S %Z})" if row else ""
        raise SegmentationError(
            f"another segmentation run is in progress{which}; wait for it to finish, then start this one again"
        )


def release_run_lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (PUBLISH_LOCK_KEY,))
    conn.commit()


def mark_abandoned(conn: psycopg.Connection) -> list[int]:
    """Runs left 'running' by a dead process. Only called while holding the run lock, so
    no live run can be among them."""
    with conn.transaction():
        abandoned = [
            r[0]
            for r in conn.execute(
                """UPDATE segmentation.runs SET status = 'failed', finished_at = now(), error = %s
                   WHERE status = 'running' RETURNING run_id""",
                (ABANDONED,),
            )
        ]
        for run_id in abandoned:
            _drop_results(conn, run_id)
    return abandoned


def start_run(
    conn: psycopg.Connection, *, flow_run_id: str | None, source_table: str, features: Sequence[str], params: dict
) -> int:
    with conn.transaction():
        return conn.execute(
            """INSERT INTO segmentation.runs (flow_run_id, source_table, features, params)
               VALUES (%s, %s, %s, %s) RETURNING run_id""",
            (flow_run_id, source_table, list(features), json.dumps(params)),
        ).fetchone()[0]


def record_source(conn: psycopg.Connection, run_id: int, source_table: str, features: Sequence[str]) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE segmentation.runs SET source_table = %s, features = %s WHERE run_id = %s",
            (source_table, list(features), run_id),
        )


def fail_run(conn: psycopg.Connection, run_id: int, error: str) -> None:
    """Mark a running run failed and drop its rows. A run that already published (say,
    retention failed after the publish) stays published and keeps its rows."""
    with conn.transaction():
        updated = conn.execute(
            """UPDATE segmentation.runs SET status = 'failed', finished_at = now(), error = %s
               WHERE run_id = %s AND status = 'running'""",
            (error, run_id),
        ).rowcount
        if updated:
            _drop_results(conn, run_id)


def quarantine(snapshot: psycopg.Connection, conn: psycopg.Connection, copy_query: sql.Composable) -> int:
    """Stream the invalid rows from the snapshot straight into segmentation.quarantine."""
    n = 0
    with conn.transaction(), conn.cursor() as wcur, wcur.copy(
        "COPY segmentation.quarantine (run_id, customer_id, reason, record) FROM STDIN"
    ) as sink, snapshot.cursor() as rcur, rcur.copy(copy_query) as source:
        for block in source:  # one row per block in PostgreSQL's COPY protocol
            sink.write(block)
            n += 1
    return n


class AssignmentWriter:
    """Binary COPY of (run_id, customer_id, segment_id, distance) into the run's own table.
    Keys and the partition bound are added after the load, which is faster than
    maintaining an index row by row."""

    def __init__(self, conn: psycopg.Connection, run_id: int):
        self.conn, self.run_id, self.rows = conn, run_id, 0
        table = partition_name(run_id)
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE segmentation.customer_segments INCLUDING DEFAULTS)").format(table)
        )
        # The bound as a CHECK, checked row by row during the load, lets ATTACH skip its
        # validation scan.
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT run_bound CHECK (run_id IS NOT NULL AND run_id = {})").format(
                table, sql.Literal(run_id)
            )
        )
        self._cursor = conn.cursor()
        # FREEZE: the table was created in this transaction, so its rows can be written
        # frozen, sparing the first readers (and autovacuum) a pass over 10 million rows.
        # Queued: a worker thread feeds PostgreSQL while this thread scores the next chunk.
        self._copy_cm = self._cursor.copy(
            sql.SQL("COPY {} FROM STDIN (FORMAT BINARY, FREEZE)").format(table),
            writer=QueuedLibpqWriter(self._cursor),
        )
        self._copy = self._copy_cm.__enter__()
        self._copy.write(HEADER)

    def write(self, customer_ids: np.ndarray, segment_ids: np.ndarray, distances: np.ndarray) -> None:
        columns = {
            "run_id": np.full(len(customer_ids), self.run_id, dtype=np.int64),
            "customer_id": customer_ids,
            "segment_id": segment_ids,
            "distance": distances,
        }
        self._copy.write(encode_rows(ASSIGNMENT_FIELDS, columns))
        self.rows += len(customer_ids)

    def close(self) -> None:
        self._copy.write(TRAILER)
        self._copy_cm.__exit__(None, None, None)
        self._cursor.close()
        conn = self.conn
        # The key's sort fits in memory up to about 5 million customers instead of spilling
        # to disk beyond about 1 million (the default is 64MB); for this transaction only.
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (run_id, customer_id)").format(partition_name(self.run_id)))
        # Attached only when the run publishes (after the quality gate): until then a failed
        # or rejected run's table can be dropped without locking customer_segments.
        conn.commit()

    def abort(self) -> None:
        try:
            self._copy_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except Exception:
            pass
        self.conn.rollback()


def _copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> None:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    with conn.cursor() as cur, cur.copy(
        sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier("segmentation", table), columns)
    ) as copy:
        for row in frame.itertuples(index=False):
            copy.write_row([None if (isinstance(v, float) and np.isnan(v)) else v for v in row])


def _drop_results(conn: psycopg.Connection, run_id: int) -> None:
    """Drop a run's own table unless it is attached: dropping a partition would lock
    customer_segments against BI readers. An attached one (a run that failed between attach
    and publish) is detached concurrently and dropped by the next run's retention pass."""
    table = partition_name(run_id)
    attached = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass(%s))", (table.as_string(conn),)
    ).fetchone()[0]
    if not attached:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


def attach(conn: psycopg.Connection, run_id: int) -> None:
    """Attach the run's table to customer_segments, committed before the publish transaction.
    A query plans against the partitions it sees when planning but reads rows with a snapshot
    taken just after; were attach and publish one commit, a query planned just before it could
    read the new current run from a plan without its partition. ATTACH takes SHARE UPDATE
    EXCLUSIVE, which readers' ACCESS SHARE does not conflict with; the CHECK constraint spares
    it a validation scan."""
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER TABLE segmentation.customer_segments ATTACH PARTITION {} FOR VALUES IN ({})").format(
                partition_name(run_id), sql.Literal(run_id)
            )
        )


def publish(
    conn: psycopg.Connection, run_id: int, *, k: int, n_customers: int, n_quarantined: int,
    inertia: float, silhouette: float | None, segments: pd.DataFrame, centroids: pd.DataFrame,
    candidates: Sequence[KCandidate], drift: dict | None, quality_issues: Sequence[str], forced: bool,
) -> None:
    """Write the run's summaries and make it the current run, all in one transaction."""
    drift = drift or {}
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("publish needs its own transaction, but one is already open on the run connection")
    attach(conn, run_id)
    with conn.transaction():
        _copy_frame(conn, "segments", segments.assign(run_id=run_id))
        _copy_frame(conn, "segment_centroids", centroids.assign(run_id=run_id))
        _copy_frame(
            conn, "k_selection",
            pd.DataFrame([{"run_id": run_id, "k": c.k, "inertia": c.inertia, "silhouette": c.silhouette} for c in candidates]),
        )
        updated = conn.execute(
            """UPDATE segmentation.runs
               SET status = 'published', published_at = now(), finished_at = now(), k = %s,
                   n_customers = %s, n_quarantined = %s, inertia = %s, silhouette = %s,
                   previous_run_id = %s, customers_compared = %s, customers_changed = %s, churn = %s,
                   adjusted_rand_index = %s, customers_added = %s, customers_removed = %s,
                   quality_issues = %s, forced = %s
               WHERE run_id = %s AND status = 'running'""",
            (
                k, n_customers, n_quarantined, inertia, silhouette,
                drift.get("previous_run_id"), drift.get("customers_compared"), drift.get("customers_changed"),
                drift.get("churn"), drift.get("adjusted_rand_index"), drift.get("customers_added"),
                drift.get("customers_removed"), list(quality_issues) or None, forced, run_id,
            ),
        ).rowcount
        if updated != 1:
            raise SegmentationError(f"run {run_id} is no longer running (marked failed by another process?)")


def reject(
    conn: psycopg.Connection, run_id: int, *, error: str, quality_issues: Sequence[str], k: int, n_customers: int,
    n_quarantined: int, silhouette: float | None,
) -> None:
    """The quality gate said no: record why, and drop the run's per-customer rows."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("reject needs its own transaction, but one is already open on the run connection")
    with conn.transaction():
        updated = conn.execute(
            """UPDATE segmentation.runs
               SET status = 'rejected', finished_at = now(), error = %s, quality_issues = %s,
                   k = %s, n_customers = %s, n_quarantined = %s, silhouette = %s
               WHERE run_id = %s AND status = 'running'""",
            (error, list(quality_issues), k, n_customers, n_quarantined, silhouette, run_id),
        ).rowcount
        if updated:
            _drop_results(conn, run_id)
