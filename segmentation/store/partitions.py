"""The life of a run's per-customer table, segmentation.customer_segments_run_<run_id>:
created and loaded with binary COPY while the run scores, attached as a partition of
customer_segments when the run is kept, and detached and dropped by retention once the run is
let go or the history answers for it (or dropped unattached when the run fails). A rollback may
write it again from the history (segmentation.store.spells). These functions run in their caller's transaction (see
segmentation.db), except `detach_and_drop`, whose DETACH ... CONCURRENTLY cannot run inside
one."""

from __future__ import annotations

import contextlib

import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows
from segmentation.core.comparison import Changes, Comparison, SortedComparison
from segmentation.db import give_to_writer, scalar

ASSIGNMENT_FIELDS = [
    ("run_id", "int8"),
    ("customer_id", "int8"),
    ("segment_id", "int4"),
    ("distance", "float8"),
    ("margin", "float8"),  # sql/020: NULL (sent for NaN) in a missing-value segment
]
NULLABLE = ("margin",)


def partition_name(run_id: int) -> sql.Identifier:
    return sql.Identifier("segmentation", f"customer_segments_run_{int(run_id)}")


def create_table(conn: psycopg.Connection, run_id: int) -> sql.Identifier:
    """The run's own table, empty, with its partition bound as a CHECK: checked row by row
    while it is loaded, it lets ATTACH skip its validation scan."""
    table = partition_name(run_id)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE segmentation.customer_segments INCLUDING DEFAULTS)").format(table))
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT run_bound CHECK (run_id IS NOT NULL AND run_id = {})").format(
            table, sql.Literal(run_id)
        )
    )
    give_to_writer(conn, "TABLE", table)
    return table


def add_key(conn: psycopg.Connection, run_id: int) -> None:
    """The key, added once the table is loaded: faster than maintaining an index row by row.
    A pass written by ranges is over then: their marks go."""
    conn.execute("DELETE FROM segmentation.written_ranges WHERE run_id = %s", (run_id,))
    # The key's sort fits in memory up to about 5 million customers instead of spilling
    # to disk beyond about 1 million (the default is 64MB); for this transaction only.
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    # Led by the customer (sql/021): run_id is one value in the table.
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (customer_id, run_id)").format(partition_name(run_id)))


class AssignmentWriter:
    """Binary COPY of (run_id, customer_id, segment_id, distance, margin) into the run's own table,
    used inside one transaction, as a context manager: the load is finished when the block
    ends, or the COPY ended with an error when it raises. The whole run (part None): the table is created, loaded and
    keyed in that transaction (COPY FREEZE needs that), and nothing remains if it rolls back.
    One range of ids (a pass split over workers, `part`: the range's number and ids): the table
    exists, committed, and the range's rows are replaced, so a range written twice (a retried
    task) is written once (see sql/010_written_ranges.sql)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        run_id: int,
        part: tuple[int, tuple[int, int]] | None = None,
        comparison: Comparison | SortedComparison | None = None,
    ):
        self.conn, self.run_id, self.rows, self._whole = conn, run_id, 0, part is None
        self.comparison = comparison  # the previous run's rows, compared with as these are written
        if part is None:
            table = create_table(conn, run_id)
            # FREEZE: the table was created in this transaction, so its rows can be written
            # frozen, sparing the first readers (and autovacuum) a pass over 10 million rows.
            options = sql.SQL("FORMAT BINARY, FREEZE")
        else:
            number, ids = part
            table = partition_name(run_id)
            # The mark is inserted first: a second write of the range running at the same time
            # waits here until the first commits (then finds the mark) or rolls back.
            first_write = conn.execute(
                "INSERT INTO segmentation.written_ranges (run_id, range_number) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (run_id, number),
            ).fetchone()
            if first_write is None:
                conn.execute(sql.SQL("DELETE FROM {} WHERE customer_id >= %s AND customer_id < %s").format(table), ids)
            options = sql.SQL("FORMAT BINARY")
        self._cursor = conn.cursor()
        # Queued: a worker thread feeds PostgreSQL while this thread scores the next chunk.
        self._copy_cm = self._cursor.copy(
            sql.SQL("COPY {} FROM STDIN ({})").format(table, options),
            writer=QueuedLibpqWriter(self._cursor),
        )
        self._copy = self._copy_cm.__enter__()
        self._copy.write(HEADER)

    def write(
        self,
        customer_ids: np.ndarray,
        segment_ids: np.ndarray,
        distances: np.ndarray,
        margins: np.ndarray | None = None,
    ) -> None:
        """margins: NaN, or None for every row, is written NULL."""
        columns = {
            "run_id": np.full(len(customer_ids), self.run_id, dtype=np.int64),
            "customer_id": customer_ids,
            "segment_id": segment_ids,
            "distance": distances,
            "margin": np.full(len(customer_ids), np.nan) if margins is None else margins,
        }
        self._copy.write(encode_rows(ASSIGNMENT_FIELDS, columns, NULLABLE))
        self.rows += len(customer_ids)
        if self.comparison is not None:
            self.comparison.update(customer_ids, segment_ids)

    def changes(self) -> Changes | None:
        """The customers written whose segment differs from the compared run's, once every row
        is written; None without a comparison, or when it gave up."""
        return None if self.comparison is None else self.comparison.changes()

    def finish(self) -> None:
        self._copy.write(TRAILER)
        self._copy_cm.__exit__(None, None, None)
        self._cursor.close()
        if self._whole:
            add_key(self.conn, self.run_id)

    def abort(self) -> None:
        """End the COPY with an error, so the transaction around it can roll back."""
        # The error that made us abort is the one to report, not one from ending the COPY.
        with contextlib.suppress(Exception):
            self._copy_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._cursor.close()

    def __enter__(self) -> AssignmentWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def is_attached(conn: psycopg.Connection, run_id: int) -> bool:
    return bool(
        scalar(
            conn,
            # A detach left pending (DETACH ... CONCURRENTLY interrupted) is on its way out:
            # new queries no longer read the partition.
            "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass(%s) AND NOT inhdetachpending)",
            (partition_name(run_id).as_string(conn),),
        )
    )


def exists(conn: psycopg.Connection, run_id: int) -> bool:
    return bool(scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (partition_name(run_id).as_string(conn),)))


def drop_unattached(conn: psycopg.Connection, run_id: int) -> None:
    """Drop a failed or rejected run's table unless it is attached: dropping a partition
    would lock customer_segments against BI readers. An attached one (a run that failed
    between attach and publish) is detached concurrently and dropped by the next `prune`."""
    if not is_attached(conn, run_id):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(partition_name(run_id)))
        conn.execute("DELETE FROM segmentation.written_ranges WHERE run_id = %s", (run_id,))


def attach(conn: psycopg.Connection, run_id: int) -> None:
    """Attach the run's table to customer_segments. The caller commits this before the
    publish transaction: a query plans against the partitions it sees when planning but
    reads rows with a snapshot taken just after; were attach and publish one commit, a query
    planned just before it could read the new current run from a plan without its partition.
    ATTACH takes SHARE UPDATE EXCLUSIVE, which readers' ACCESS SHARE does not conflict with;
    the CHECK constraint spares it a validation scan."""
    conn.execute(
        sql.SQL("ALTER TABLE segmentation.customer_segments ATTACH PARTITION {} FOR VALUES IN ({})").format(
            partition_name(run_id), sql.Literal(run_id)
        )
    )


def to_prune(conn: psycopg.Connection, keep: int, segmentation: str) -> list[int]:
    """The segmentation's runs whose per-customer assignments retention lets go: all but its
    newest `keep` complete runs (published, staged or rejected: each can still be made
    current), never its current run, the one current before it (where a plain `segmentation
    rollback` goes), nor its newest history run (its rows are the spells still running); and
    its failed runs whose table is still attached."""
    return [
        r[0]
        for r in conn.execute(
            """(SELECT run_id FROM segmentation.runs
                WHERE segmentation = %(s)s AND status IN ('published', 'staged', 'rejected')
                  AND assignments_pruned_at IS NULL
                ORDER BY finished_at DESC, run_id DESC OFFSET %(keep)s)
               EXCEPT
               (SELECT run_id FROM (SELECT run_id FROM segmentation.current_run_log WHERE segmentation = %(s)s
                                    ORDER BY switch_id DESC LIMIT 2) AS c
                UNION ALL
                SELECT run_id FROM segmentation.runs
                WHERE segmentation = %(s)s
                  AND history_version = (SELECT max(history_version) FROM segmentation.runs WHERE segmentation = %(s)s))
               UNION ALL
               SELECT r.run_id FROM segmentation.runs r
               JOIN pg_inherits i ON i.inhrelid = to_regclass(format('segmentation.customer_segments_run_%%s', r.run_id))
               WHERE r.status = 'failed' AND r.segmentation = %(s)s""",
            {"keep": max(1, keep), "s": segmentation},
        )
    ]


def not_needed(conn: psycopg.Connection, segmentation: str) -> list[int]:
    """The segmentation's runs whose own table can go: runs let go by retention (and failed
    runs) that still have one, and history runs other than its newest and its current run,
    which the spells answer for. A running run is never among them: its table is not attached."""
    return [
        r[0]
        for r in conn.execute(
            """SELECT run_id FROM segmentation.runs
               WHERE segmentation = %(s)s AND status <> 'running'
                 AND to_regclass(format('segmentation.customer_segments_run_%%s', run_id)) IS NOT NULL
                 AND (assignments_pruned_at IS NOT NULL
                      OR status = 'failed'
                      OR (history_version < (SELECT max(history_version) FROM segmentation.runs
                                             WHERE segmentation = %(s)s)
                          AND run_id <> coalesce((SELECT run_id FROM segmentation.current_run_log
                                                  WHERE segmentation = %(s)s ORDER BY switch_id DESC LIMIT 1), 0)))
               ORDER BY run_id""",
            {"s": segmentation},
        )
    ]


def detach_and_drop(conn: psycopg.Connection, run_id: int) -> None:
    """Detach the run's table concurrently (BI readers of customer_segments are never blocked
    behind it) and drop it: a whole partition at a time, never a DELETE of millions of rows.
    conn must be in autocommit, outside any transaction block."""
    table = partition_name(run_id)
    state = conn.execute(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)", (table.as_string(conn),)
    ).fetchone()
    if state is not None:
        # A detach interrupted half-way is left pending and must be finalised instead.
        action = "FINALIZE" if state[0] else "CONCURRENTLY"
        conn.execute(
            sql.SQL("ALTER TABLE segmentation.customer_segments DETACH PARTITION {} {}").format(table, sql.SQL(action))
        )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
