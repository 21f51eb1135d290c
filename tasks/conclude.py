"""The one step that turns a run's outcome (segmentation.outcome) into its consequences, once:
the run report, retention, the run's event, the approval request, and the flow run's final
state and return value. Both flows (the nightly one and approve-run) end here.

The outcome is already decided when this runs: a report, a retention pass or an event that
cannot be made is a warning, never a different outcome."""

from __future__ import annotations

from typing import Any

import psycopg
from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed

from segmentation import db
from segmentation.events import asset_events, database_location, run_event
from segmentation.outcome import Outcome
from segmentation.segmentations import DEFAULT, view_names
from segmentation.settings import Settings
from segmentation.store.run import Run
from segmentation.tasks.report import report

REJECTED = "Rejected"  # the state name that tells a run the gate stopped from one that crashed


def conclude(outcome: Outcome, run: Run | None = None, approval_timeout_minutes: float = 0) -> dict[str, Any] | State:
    """Report and apply retention for a kept run (while `run` still holds the run lock), let
    the run go, emit its event (or, when the gate rejected it and approval is wanted, ask for
    approval, which emits the event once decided), and end the flow run: its result for a kept run that is published or staged; Failed, named
    Rejected for a rejected run, with the reasons as the message otherwise."""
    if outcome.kept and outcome.run_id is not None:
        report(outcome.run_id)
        if run is not None:
            prune_history(run)
    if run is not None:
        run.close()  # before any wait for approval: the approval publishes under the run lock
    if outcome.status == "rejected" and approval_timeout_minutes > 0:
        from segmentation.tasks.approval import request_approval

        # The run's event comes from the approval, once it is decided (or it could not be asked for).
        return request_approval(outcome, approval_timeout_minutes)
    announce(outcome)
    return end(outcome)


def end(outcome: Outcome) -> dict[str, Any] | State:
    """The flow run's end: the outcome's result when the run is published or staged; else a
    Failed state, named Rejected for a run the gate (or a person) rejected, with the reasons."""
    if outcome.status in ("published", "staged"):
        # A reason here is an error met after the run was kept (tasks.run.fail_run): said in the message.
        return Completed(data=outcome.result(), message=outcome.message) if outcome.reasons else outcome.result()
    return Failed(name=REJECTED if outcome.status == "rejected" else "Failed", message=outcome.message)


@task(name="announce", cache_policy=NO_CACHE)
def announce(outcome: Outcome) -> None:
    """Emit segmentation.run.<status> (segmentation.events). An event that cannot be sent is a
    warning: the run's outcome is in the database whatever happens to its event."""
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    event = run_event(outcome.status, outcome.payload(), flow_run_id=flow_run_id)
    try:
        emit_event(**event)
    except Exception as exc:  # noqa: BLE001 - the run's result stands; say why the event is missing
        get_run_logger().warning("could not emit %s: %s", event["event"], exc)
        return
    get_run_logger().info("event %s for %s", event["event"], event["resource"]["prefect.resource.id"])
    if outcome.status == "published":
        _announce_assets(outcome, flow_run_id)


def _announce_assets(outcome: Outcome, flow_run_id: str | None) -> None:
    """Lineage: the published run's BI views materialized from its source table, as Prefect
    asset events (segmentation.events.asset_events), which a self-hosted server keeps and an
    automation can match."""
    figures = outcome.payload()
    segmentation = str(figures.get("segmentation") or DEFAULT)
    try:
        location = database_location(db.database_url(Settings.from_env()))
        for event in asset_events(figures, location=location, views=view_names(segmentation), flow_run_id=flow_run_id):
            emit_event(**event)
    except Exception as exc:  # noqa: BLE001 - the run's result stands; say why the lineage is missing
        get_run_logger().warning("could not emit the asset events of run %s: %s", outcome.run_id, exc)
        return
    get_run_logger().info(
        "asset events: %d views of segmentation %s materialized", len(view_names(segmentation)), segmentation
    )


@task(name="prune-history", cache_policy=NO_CACHE)
def prune_history(run: Run) -> list[int]:
    """The run is already decided: failing to prune is a warning, and the next run tries again."""
    try:
        pruned = run.prune(run.settings.keep_published_runs)
    except psycopg.Error as exc:
        get_run_logger().warning("retention: could not prune old runs now (%s); the next run tries again", exc)
        return []
    if pruned:
        get_run_logger().info(
            "retention: dropped per-customer rows of runs %s (keeping the newest %d published runs)",
            ", ".join(map(str, pruned)),
            run.settings.keep_published_runs,
        )
    return pruned
