"""Run bookkeeping: the run lock and the life of a row of segmentation.runs, from `running`
to `published`, `rejected` or `failed`, and the run's quarantined rows.

A run holds its segmentation's run lock, a session-level advisory lock, on its connection from
start to finish, so only one run of a segmentation works at a time (runs of different
segmentations may work at once); if its process dies, PostgreSQL drops the connection and the lock.
Publishing is one UPDATE of the run's status, so BI readers switch from the old run to the
new one in a single commit. These functions run in their caller's transaction (see
segmentation.db); segmentation.store.run.Run is the caller."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from segmentation.core.model import KCandidate
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.outcome import FIGURES, KEPT, Outcome
from segmentation.segmentations import DEFAULT
from segmentation.store import scoring

RUN_LOCK_KEY = 0x5E6_0002  # any fixed 64-bit number; it only has to differ from the migration lock
ABANDONED = "abandoned: the process running it stopped before it finished"


def run_lock_key(segmentation: str = DEFAULT) -> int:
    """The advisory lock key of a segmentation's runs: RUN_LOCK_KEY for the default, as ever (a
    run of an earlier version and one of this version exclude each other), else a 64-bit hash
    of the name."""
    if segmentation == DEFAULT:
        return RUN_LOCK_KEY
    digest = hashlib.blake2b(f"segmentation run lock {segmentation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def acquire_run_lock(conn: psycopg.Connection, segmentation: str = DEFAULT) -> None:
    """Take the segmentation's run lock, or say which run holds it. conn must be in autocommit:
    the lock is the session's, held until the connection closes."""
    locked = scalar(conn, "SELECT pg_try_advisory_lock(%s)", (run_lock_key(segmentation),))
    if not locked:
        row = conn.execute(
            "SELECT run_id, started_at FROM segmentation.runs WHERE status = 'running' AND segmentation = %s "
            "ORDER BY run_id DESC LIMIT 1",
            (segmentation,),
        ).fetchone()
        which = f" (run {row[0]}, started {row[1]:%Y-%m-%d %H:%M:%S %Z})" if row else ""
        of = "" if segmentation == DEFAULT else f" of segmentation {segmentation}"
        raise SegmentationError(
            f"another segmentation run{of} is in progress{which}; wait for it to finish, then start this one again"
        )


def mark_abandoned(conn: psycopg.Connection, segmentation: str = DEFAULT) -> list[int]:
    """Mark the segmentation's runs left 'running' by a dead process failed. Only called while
    holding its run lock, so no live run can be among them (another segmentation's may be live)."""
    return [
        r[0]
        for r in conn.execute(
            """UPDATE segmentation.runs SET status = 'failed', finished_at = now(), error = %s
               WHERE status = 'running' AND segmentation = %s RETURNING run_id""",
            (ABANDONED, segmentation),
        )
    ]


def insert_run(
    conn: psycopg.Connection,
    *,
    flow_run_id: str | None,
    source_table: str,
    features: Sequence[str],
    params: dict,
    segmentation: str = DEFAULT,
) -> int:
    return int(
        scalar(
            conn,
            """INSERT INTO segmentation.runs (flow_run_id, source_table, features, params, segmentation)
               VALUES (%s, %s, %s, %s, %s) RETURNING run_id""",
            (flow_run_id, source_table, list(features), json.dumps(params), segmentation),
        )
    )


def segmentation_of(conn: psycopg.Connection, run_id: int) -> str | None:
    """The segmentation a run belongs to; None when there is no such run."""
    row = conn.execute("SELECT segmentation FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def record_source(
    conn: psycopg.Connection, run_id: int, source_table: str, features: Sequence[str], id_type: str | None = None
) -> None:
    conn.execute(
        "UPDATE segmentation.runs SET source_table = %s, features = %s, id_type = %s WHERE run_id = %s",
        (source_table, list(features), id_type, run_id),
    )


def mark_failed(conn: psycopg.Connection, run_id: int, error: str) -> bool:
    """Mark a running run failed; False when it is no longer running (a run that already
    published, say, stays published)."""
    return bool(
        conn.execute(
            """UPDATE segmentation.runs SET status = 'failed', finished_at = now(), error = %s
               WHERE run_id = %s AND status = 'running'""",
            (error, run_id),
        ).rowcount
    )


def copy_quarantine(snapshot: psycopg.Connection, conn: psycopg.Connection, copy_query: sql.Composed) -> int:
    """Stream the invalid rows from the snapshot straight into segmentation.quarantine."""
    n = 0
    with (
        conn.cursor() as wcur,
        wcur.copy("COPY segmentation.quarantine (run_id, customer_id, reason, record) FROM STDIN") as sink,
        snapshot.cursor() as rcur,
        rcur.copy(copy_query) as source,
    ):
        for block in source:  # one row per block in PostgreSQL's COPY protocol
            sink.write(block)
            n += 1
    return n


def _copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> None:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier("segmentation", table), columns)) as copy,
    ):
        for row in frame.itertuples(index=False):
            copy.write_row([None if (isinstance(v, float) and np.isnan(v)) else v for v in row])


@dataclass(frozen=True)
class Publication:
    """What a complete run found, kept whether it is published, staged or rejected."""

    k: int
    n_customers: int
    n_quarantined: int
    inertia: float
    silhouette: float | None
    segments: pd.DataFrame
    centroids: pd.DataFrame
    candidates: Sequence[KCandidate]
    drift: dict | None
    quality_issues: Sequence[str]
    model: scoring.Model
    profiles: pd.DataFrame | None = None  # segmentation.core.profiles.COLUMNS
    distributions: pd.DataFrame | None = None  # rows of segmentation.feature_distributions


# A complete run is kept, with its assignments and summaries, as one of these. Only a
# published run is ever current; a staged or rejected one can be made current later.
COMPLETE = KEPT


def mark_complete(
    conn: psycopg.Connection,
    run_id: int,
    found: Publication,
    *,
    status: str,
    forced: bool = False,
    error: str | None = None,
) -> None:
    """Write the run's summaries and its figures, and end it as `status`. The caller runs this
    in one transaction, after the run's partition was attached (partitions.attach), and for a
    published run records the switch (record_switch) in the same transaction."""
    if status not in COMPLETE:
        raise ValueError(f"{status} is not a status of a complete run")
    drift = found.drift or {}
    _copy_frame(conn, "segments", found.segments.assign(run_id=run_id))
    _copy_frame(conn, "segment_centroids", found.centroids.assign(run_id=run_id))
    if found.profiles is not None and len(found.profiles):
        _copy_frame(conn, "segment_profiles", found.profiles.assign(run_id=run_id))
    if found.distributions is not None and len(found.distributions):
        _copy_frame(conn, "feature_distributions", found.distributions.assign(run_id=run_id))
    _copy_frame(
        conn,
        "k_selection",
        pd.DataFrame(
            [{"run_id": run_id, "k": c.k, "inertia": c.inertia, "silhouette": c.silhouette} for c in found.candidates]
        ),
    )
    updated = conn.execute(
        """UPDATE segmentation.runs
           SET status = %s, published_at = CASE WHEN %s = 'published' THEN now() END, finished_at = now(),
               k = %s, n_customers = %s, n_quarantined = %s, inertia = %s, silhouette = %s,
               previous_run_id = %s, customers_compared = %s, customers_changed = %s, churn = %s,
               adjusted_rand_index = %s, customers_added = %s, customers_removed = %s,
               quality_issues = %s, forced = %s, error = %s
           WHERE run_id = %s AND status = 'running'""",
        (
            status,
            status,
            found.k,
            found.n_customers,
            found.n_quarantined,
            found.inertia,
            found.silhouette,
            drift.get("previous_run_id"),
            drift.get("customers_compared"),
            drift.get("customers_changed"),
            drift.get("churn"),
            drift.get("adjusted_rand_index"),
            drift.get("customers_added"),
            drift.get("customers_removed"),
            list(found.quality_issues) or None,
            forced,
            error,
            run_id,
        ),
    ).rowcount
    if updated != 1:
        raise SegmentationError(f"run {run_id} is no longer running (marked failed by another process?)")
    scoring.save(conn, run_id, found.model)


def current_switch(conn: psycopg.Connection, segmentation: str = DEFAULT) -> dict | None:
    """The segmentation's newest row of segmentation.current_run_log: its current run, and how it
    became current."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT switch_id, switched_at, run_id, from_run_id, action, reason "
            "FROM segmentation.current_run_log WHERE segmentation = %s ORDER BY switch_id DESC LIMIT 1",
            (segmentation,),
        ).fetchone()


@dataclass(frozen=True)
class Switched:
    """A row of segmentation.current_run_log just written: run_id became current, from_run_id
    (None: no run) was current before."""

    switch_id: int
    run_id: int
    from_run_id: int | None
    segmentation: str


def record_switch(conn: psycopg.Connection, run_id: int, *, action: str, reason: str | None = None) -> Switched:
    """Make run_id the current run of its segmentation: one row in segmentation.current_run_log,
    with its views of customers speaking the run's ids (migrations.follow_id_type). The caller
    keeps the switch's changes (segmentation.store.change_feed.record) in the same transaction."""
    from segmentation import migrations  # it reads the BI files; the store does not otherwise

    migrations.follow_id_type(conn, run_id)
    row = conn.execute(
        """INSERT INTO segmentation.current_run_log (run_id, from_run_id, action, reason, segmentation)
           SELECT r.run_id, (SELECT l.run_id FROM segmentation.current_run_log AS l WHERE l.segmentation = r.segmentation
                             ORDER BY l.switch_id DESC LIMIT 1), %s, %s, r.segmentation
           FROM segmentation.runs AS r WHERE r.run_id = %s
           RETURNING switch_id, run_id, from_run_id, segmentation""",
        (action, reason, run_id),
    ).fetchone()
    if row is None:
        raise ValueError(f"there is no run {run_id}")
    # predict(customer) and predict(customer, segmentation) take the new current run's branch.
    scoring.route(conn)
    return Switched(int(row[0]), int(row[1]), None if row[2] is None else int(row[2]), str(row[3]))


def mark_pruned(conn: psycopg.Connection, run_id: int) -> None:
    conn.execute(
        "UPDATE segmentation.runs SET assignments_pruned_at = now() WHERE run_id = %s AND status <> 'failed'",
        (run_id,),
    )


def outcome_of(
    conn: psycopg.Connection, *, run_id: int | None = None, flow_run_id: str | UUID | None = None
) -> Outcome | None:
    """What became of run run_id, or of the newest run of Prefect flow run flow_run_id (a flow
    run retried may have begun more than one), as the database has it: the one place a run's
    status is read. None when there is no such run."""
    if (run_id is None) == (flow_run_id is None):
        raise ValueError("name the run by run_id or by flow_run_id, not both")
    where = sql.SQL("run_id = %s") if run_id is not None else sql.SQL("flow_run_id = %s")
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            sql.SQL(
                "SELECT run_id, status, source_table, forced, quality_issues, error, segmentation, {} "
                "FROM segmentation.runs WHERE {} ORDER BY run_id DESC LIMIT 1"
            ).format(sql.SQL(", ").join(map(sql.Identifier, FIGURES)), where),
            (run_id if run_id is not None else str(flow_run_id),),
        ).fetchone()
    if row is None:
        return None
    return Outcome(
        status=row["status"],
        run_id=int(row["run_id"]),
        source_table=row["source_table"],
        figures={key: row[key] for key in FIGURES},
        quality_issues=tuple(row["quality_issues"] or ()),
        forced=bool(row["forced"]),
        reasons=(row["error"],) if row["error"] else (),
        segmentation=row["segmentation"],
    )


def current_run_id(conn: psycopg.Connection, segmentation: str = DEFAULT) -> int | None:
    switch = current_switch(conn, segmentation)
    return None if switch is None else int(switch["run_id"])
