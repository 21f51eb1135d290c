"""A person's answers to runs the quality gate stopped (segmentation.approvals, sql/011). Each
function is one statement in its caller's transaction, or its own on an autocommit connection."""

from __future__ import annotations

import psycopg

DECISIONS = ("approved", "rejected", "no answer")


def record(conn: psycopg.Connection, run_id: int, decision: str, note: str, flow_run_id: str | None) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"{decision} is not a decision on a run")
    conn.execute(
        "INSERT INTO segmentation.approvals (run_id, decision, note, flow_run_id) VALUES (%s, %s, %s, %s)",
        (run_id, decision, note, flow_run_id),
    )


def latest(conn: psycopg.Connection, run_id: int) -> dict | None:
    """The newest decision on the run: decided_at, decision, note."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT decided_at, decision, note FROM segmentation.approvals WHERE run_id = %s "
            "ORDER BY approval_id DESC LIMIT 1",
            (run_id,),
        ).fetchone()
