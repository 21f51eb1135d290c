"""Making a kept run current again: a rollback to an earlier published run, or the promotion
of a staged run (or, with force, of one the quality gate rejected).

Each segmentation has its own current run: making a run current is within the run's own
segmentation, under that segmentation's run lock, and leaves every other segmentation's as it is.

No retraining: a complete run keeps its assignments and summaries (until retention prunes
them), so making it current is one row in segmentation.current_run_log, committed in the
switch's transaction under the run lock. A published run whose own rows retention dropped is answered
for by the history (segmentation.store.spells): its rows are rebuilt from it first, without
distances. A promoted run enters the history in the switch's transaction, and the switch's
changes (who moved: segmentation.store.change_feed) are kept in it too. BI readers see the
switch all at once, as they see a publish: every current_ view reads that log and its rows in
one statement. The next run's id matching
and drift compare against whatever run is current then.

Who commits: make_current, in transactions of its own under the session's run lock (see
segmentation.db): the rebuild, the attach, then the switch."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import psycopg

from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.segmentations import DEFAULT
from segmentation.store import change_feed, partitions, runs, spells


@dataclass(frozen=True)
class Switch:
    run_id: int  # current now
    from_run_id: int | None  # current before
    action: str  # rollback or promote
    segmentation: str = DEFAULT


def make_current(
    conn: psycopg.Connection,
    *,
    run_id: int | None,
    reason: str,
    force: bool = False,
    only_if_newest: bool = False,
    segmentation: str | None = None,
) -> Switch:
    """Make run_id current in its segmentation (default: the run that was current in
    `segmentation`, default `default`, before its current one). Refused, in one line, for an
    unknown run, a run of another segmentation than the one named, a run that is not complete,
    a run whose assignments are gone, a rejected run without force, and the current run itself;
    with only_if_newest (an approval), also when a newer run is current, checked under the run
    lock. conn must be in autocommit: the run lock is held across the transactions below."""
    if not reason.strip():
        raise SegmentationError("say why with --reason, e.g. --reason 'run 12 published a broken load'")
    segmentation = _segmentation(conn, run_id, segmentation)
    # The segmentation's run lock: no run of it publishes meanwhile, and none starts.
    if not scalar(conn, "SELECT pg_try_advisory_lock(%s)", (runs.run_lock_key(segmentation),)):
        of = "" if segmentation == DEFAULT else f" of segmentation {segmentation}"
        raise SegmentationError(
            f"a segmentation run{of} is in progress; wait for it to finish, then make the run current again"
        )
    try:
        with conn.transaction():
            current = runs.current_switch(conn, segmentation)
            current_id = current["run_id"] if current else None
            if run_id is None:
                run_id = _before(conn, current, segmentation)
            if only_if_newest and current_id is not None and current_id > run_id:
                raise SegmentationError(
                    f"run {run_id} was approved but run {current_id} was published after it; "
                    f"to replace that one anyway: segmentation promote {run_id} --force --reason '...'"
                )
            target = _run(conn, run_id)
            _check(conn, target, current_id, force)
            # A history run other than the newest may have lost its own rows to retention:
            # they are written again from the spells, then attached (committed on its own, as
            # for a publish: see partitions.attach) before the switch.
            rebuild = target["history_version"] is not None and not partitions.is_attached(conn, run_id)
            if rebuild:
                partitions.drop_unattached(conn, run_id)  # left by an attempt that failed half-way
                spells.rebuild(conn, run_id)
        if rebuild:
            with conn.transaction():
                partitions.attach(conn, run_id)
        action = "rollback" if target["status"] == "published" else "promote"
        with conn.transaction():
            if action == "promote":
                conn.execute(
                    """UPDATE segmentation.runs SET status = 'published', published_at = now(),
                           forced = forced OR status = 'rejected', error = NULL
                       WHERE run_id = %s""",
                    (run_id,),
                )
            switch = runs.record_switch(conn, run_id, action=action, reason=reason.strip())
            # Who moved: the two runs compared in SQL. A promoted run enters the history from
            # the same comparison when the run current before is the newest history run.
            compared_with = change_feed.record(conn, switch, compared_with=None)
            if action == "promote":
                spells.enter(conn, run_id, compared_with=compared_with)
            else:
                spells.discard_changes(conn)
    finally:
        with suppress(psycopg.Error):  # a lost connection has released it already
            conn.execute("SELECT pg_advisory_unlock(%s)", (runs.run_lock_key(segmentation),))
    return Switch(run_id, current_id, action, segmentation)


def _segmentation(conn: psycopg.Connection, run_id: int | None, named: str | None) -> str:
    """The segmentation the switch is in: the run's own; the one named must be it."""
    if run_id is None:
        return named or DEFAULT
    own = runs.segmentation_of(conn, run_id)
    if own is None:
        raise SegmentationError(
            f"there is no run {run_id}; `segmentation runs` lists the runs that can be made current"
        )
    if named is not None and named != own:
        raise SegmentationError(
            f"run {run_id} is a run of segmentation {own}, not {named}; "
            f"`segmentation runs --segmentation {named}` lists {named}'s runs"
        )
    return own


def _before(conn: psycopg.Connection, current: dict | None, segmentation: str) -> int:
    if current is None:
        of = "" if segmentation == DEFAULT else f" in segmentation {segmentation}"
        raise SegmentationError(f"no run has been published yet{of}, so there is nothing to roll back to")
    row = conn.execute(
        "SELECT run_id FROM segmentation.current_run_log WHERE segmentation = %s AND switch_id < %s AND run_id <> %s "
        "ORDER BY switch_id DESC LIMIT 1",
        (segmentation, current["switch_id"], current["run_id"]),
    ).fetchone()
    if row is None:
        raise SegmentationError(
            f"run {current['run_id']} is the only run that has been current; name another with --to RUN_ID"
        )
    return int(row[0])


def _run(conn: psycopg.Connection, run_id: int) -> dict:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        found = cur.execute(
            "SELECT run_id, status, error, quality_issues, assignments_pruned_at, history_version "
            "FROM segmentation.runs WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    if found is None:
        raise SegmentationError(
            f"there is no run {run_id}; `segmentation runs` lists the runs that can be made current"
        )
    return found


def _check(conn: psycopg.Connection, run: dict, current_id: int | None, force: bool) -> None:
    run_id, status = run["run_id"], run["status"]
    if run_id == current_id:
        raise SegmentationError(f"run {run_id} is already current")
    if status not in runs.COMPLETE:
        why = f": {run['error']}" if run["error"] else ""
        raise SegmentationError(f"run {run_id} is {status}{why}; only a complete run can be made current")
    kept = run["history_version"] is not None or partitions.is_attached(conn, run_id)
    if run["assignments_pruned_at"] is not None or not kept:
        raise SegmentationError(
            f"run {run_id}'s per-customer assignments are no longer kept (retention keeps the newest "
            "SEGMENTATION_KEEP_PUBLISHED_RUNS runs); choose a newer run, or start a new run"
        )
    if (
        not scalar(conn, "SELECT EXISTS (SELECT FROM segmentation.run_models WHERE run_id = %s)", (run_id,))
        and not force
    ):
        raise SegmentationError(
            f"run {run_id} completed before models were kept, so segmentation.predict could not score with it; "
            "pass --force to make it current anyway"
        )
    if status == "rejected" and not force:
        raise SegmentationError(
            f"run {run_id} was rejected by the quality gate ({'; '.join(run['quality_issues'] or [])}); if you have checked it, "
            "pass --force to make it current anyway"
        )
