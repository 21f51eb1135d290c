"""The run's event, for automations and downstream jobs (segmentation.events)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.logging import get_run_logger

from segmentation.events import run_event


@task(name="announce", cache_policy=NO_CACHE)
def announce(outcome: str, figures: dict[str, Any], flow_run_id: str | None) -> None:
    """Emit segmentation.run.<outcome>. An event that cannot be sent is a warning: the run's
    outcome is in the database whatever happens to its event."""
    event = run_event(outcome, figures, flow_run_id=flow_run_id)
    try:
        emit_event(**event)
    except Exception as exc:  # noqa: BLE001 - the run's result stands; say why the event is missing
        get_run_logger().warning("could not emit %s: %s", event["event"], exc)
        return
    get_run_logger().info("event %s for %s", event["event"], event["resource"]["prefect.resource.id"])
