"""What a run tells the world when it ends: one Prefect event per run, and the automation that
turns the bad ones into notifications.

The event names, the resource and the payload are declared here once: the flow emits them
(segmentation.tasks.conclude), `segmentation alerts install` matches them, and docs/operations.md
lists them. The payload holds figures and reasons only, never the database URL nor any
customer's data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from segmentation.segmentations import DEFAULT

EVENT_PREFIX = "segmentation.run."
OUTCOMES = ("published", "staged", "rejected", "failed")
ALERT_ON = ("rejected", "failed")
AUTOMATION_NAME = "segmentation: rejected or failed run"
PAYLOAD_KEYS = (
    "run_id",
    "status",
    "segmentation",
    "source_table",
    "k",
    "n_customers",
    "n_quarantined",
    "churn",
    "forced",
    "quality_issues",
    "error",
    "flow_run_id",
)
SUBJECT = "Segmentation run {{ event.payload.run_id }} {{ event.payload.status }}"
BODY = (
    "Segmentation run {{ event.payload.run_id }} (segmentation {{ event.payload.segmentation }}) on "
    "{{ event.payload.source_table }} was {{ event.payload.status }}: {{ event.payload.error }}\n"
    "The run that was current stays current. Prefect flow run: {{ event.payload.flow_run_id }}"
)


def resource_id(run_id: int | None, flow_run_id: str | None) -> str:
    """segmentation.run.<run_id>; a run that failed before it was recorded has no run id and
    is named by its flow run: segmentation.run.flow-run.<id>."""
    if run_id is not None:
        return f"{EVENT_PREFIX}{int(run_id)}"
    return f"{EVENT_PREFIX}flow-run.{flow_run_id or 'unknown'}"


def run_event(outcome: str, figures: Mapping[str, Any], *, flow_run_id: str | None) -> dict[str, Any]:
    """The keyword arguments of prefect.events.emit_event for a run that ended as `outcome`."""
    if outcome not in OUTCOMES:
        raise ValueError(f"{outcome} is not an outcome of a run")
    payload = {key: figures.get(key) for key in PAYLOAD_KEYS}
    payload["status"] = outcome
    payload["flow_run_id"] = flow_run_id
    related = []
    if flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"})
    return {
        "event": EVENT_PREFIX + outcome,
        "resource": {
            "prefect.resource.id": resource_id(payload["run_id"], flow_run_id),
            "prefect.resource.name": f"segmentation run {payload['run_id'] if payload['run_id'] is not None else '-'}",
            # The segmentation the run belongs to: an automation can match one with it.
            "segmentation.name": str(payload.get("segmentation") or DEFAULT),
        },
        "related": related,
        "payload": payload,
    }


ASSET_MATERIALIZED = "prefect.asset.materialization.succeeded"
ASSET_REFERENCED = "prefect.asset.referenced"
ASSET_FIGURES = ("run_id", "segmentation", "k", "n_customers", "n_quarantined", "churn", "forced")


def database_location(url: str) -> str:
    """host:port/database of a database URL, for asset keys: never the user or the password;
    every host of a multi-host URL (segmentation.dburl.location). A Unix socket directory
    stands as `local`."""
    from segmentation.dburl import location

    return location(url)


def asset_key(location: str, relation: str) -> str:
    """The Prefect asset key of a relation of the database at `location` (database_location):
    postgres://host:port/database/schema.relation."""
    return f"postgres://{location}/{relation}"


def asset_events(
    figures: Mapping[str, Any], *, location: str, views: Sequence[str], flow_run_id: str | None
) -> list[dict[str, Any]]:
    """The keyword arguments of prefect.events.emit_event for a publish, as Prefect's own
    @materialize emits them: the source table referenced, and each BI view the publish changed
    materialized, with the source as its upstream asset and the run's figures as metadata."""
    source = asset_key(location, str(figures.get("source_table")))
    upstream = [{"prefect.resource.id": source, "prefect.resource.role": "asset"}]
    if flow_run_id:
        upstream.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"})
    upstream.append({"prefect.resource.id": "segmentation", "prefect.resource.role": "asset-materialized-by"})
    metadata = {key: figures.get(key) for key in ASSET_FIGURES}
    found: list[dict[str, Any]] = [
        {"event": ASSET_REFERENCED, "resource": {"prefect.resource.id": source}, "related": []}
    ]
    for view in views:
        relation = f"segmentation_bi.{view}"
        found.append(
            {
                "event": ASSET_MATERIALIZED,
                "resource": {"prefect.resource.id": asset_key(location, relation), "prefect.resource.name": relation},
                "related": upstream,
                "payload": metadata,
            }
        )
    return found


def alert_automation(block_document_id: Any) -> Any:
    """The automation `segmentation alerts install` creates: a notification through the given
    block for every rejected or failed run, as soon as its event arrives."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=AUTOMATION_NAME,
        description="Created by `segmentation alerts install`: a notification for every rejected or failed run.",
        trigger=EventTrigger(
            expect={EVENT_PREFIX + outcome for outcome in ALERT_ON},
            match={"prefect.resource.id": f"{EVENT_PREFIX}*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    )


STALE_AUTOMATION_NAME = "segmentation: no publish of {segmentation}"
STALE_AFTER_HOURS = 26.0  # a nightly run, with two hours to spare
STALE_SUBJECT = "No segmentation published for {segmentation} in {hours} hours"
STALE_BODY = (
    "No run of segmentation {segmentation} was published in the last {hours} hours: the nightly run did not "
    "happen, failed, or was rejected. The views still show the run published before. Check the deployment "
    "customer-segmentation/{deployment} and `segmentation runs --segmentation {segmentation}`."
)


def _hours(stale_after: timedelta) -> str:
    return f"{stale_after.total_seconds() / 3600:g}"


def stale_automation(block_document_id: Any, segmentation: str, stale_after: timedelta) -> Any:
    """The automation for a publish that did not happen: a proactive trigger that fires when no
    segmentation.run.published event of this segmentation arrives within `stale_after`, on a
    self-hosted server as on Prefect Cloud (Prefect Cloud's deployment SLAs are not needed)."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    hours = _hours(stale_after)
    deployment = "nightly" if segmentation == DEFAULT else segmentation
    return Automation(
        name=STALE_AUTOMATION_NAME.format(segmentation=segmentation),
        description=f"Created by `segmentation alerts install`: a notification when segmentation {segmentation} "
        f"publishes no run for {hours} hours.",
        trigger=EventTrigger(
            expect={EVENT_PREFIX + "published"},
            match={"prefect.resource.id": f"{EVENT_PREFIX}*", "segmentation.name": segmentation},
            posture=Posture.Proactive,
            threshold=1,
            within=stale_after,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=STALE_SUBJECT.format(segmentation=segmentation, hours=hours),
                body=STALE_BODY.format(segmentation=segmentation, hours=hours, deployment=deployment),
            )
        ],
    )


def install_alerts(
    block: str, segmentations: Sequence[str] = (DEFAULT,), stale_after: timedelta | None = None
) -> list[tuple[Any, bool]]:
    """Create the alert automations, or bring the existing ones (found by name) up to date:
    idempotent. One for every rejected or failed run; and, with stale_after, one per
    segmentation for a publish that did not happen. block: a notification block's name, or
    `<block-type-slug>/<name>` when two types share the name. Returns (automation, created) for
    each."""
    block_id = _block_id(block)
    wanted = [alert_automation(block_id)]
    if stale_after is not None:
        wanted += [stale_automation(block_id, name, stale_after) for name in segmentations]
    return [_create_or_update(automation) for automation in wanted]


def _block_id(block: str) -> Any:
    from prefect.client.orchestration import get_client

    from segmentation.errors import SegmentationError

    slug, _, name = block.rpartition("/")
    with get_client(sync_client=True) as client:
        found = [
            d
            for d in client.read_block_documents(include_secrets=False)
            if d.name == name and (not slug or (d.block_type is not None and d.block_type.slug == slug))
        ]
        if not found:
            raise SegmentationError(
                f"there is no Prefect block named {block!r}; create a notification block (Slack, Teams, custom "
                "webhook, e-mail) in the Prefect UI under Blocks, then pass its name"
            )
        if len(found) > 1:
            kinds = ", ".join(f"{d.block_type.slug}/{d.name}" for d in found if d.block_type is not None)
            raise SegmentationError(f"several blocks are named {name!r} ({kinds}); pass one as <type>/<name>")
        return found[0].id


def _create_or_update(wanted: Any) -> tuple[Any, bool]:
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name=wanted.name)
    if not existing:
        return wanted.create(), True
    current = Automation(**existing[0].model_dump())
    for extra in existing[1:]:
        Automation(**extra.model_dump()).delete()
    updated = current.model_copy(
        update={
            "trigger": wanted.trigger,
            "actions": wanted.actions,
            "description": wanted.description,
            "enabled": True,
        }
    )
    updated.update()
    return updated, False
