"""The deployments: `segmentation serve` serves the nightly flow as customer-segmentation/nightly
and, beside it, the approve-run flow as approve-run/nightly (no schedule: the nightly flow starts
it when a run waits for a person's approval); `segmentation deploy` registers both with a work pool.

With a segmentations file (--config, SEGMENTATION_CONFIG; segmentation.config), each segmentation
NAME in it is one deployment customer-segmentation/NAME instead, on its own schedule, with its own
parameters and concurrency limit of 1, and approve-run/NAME beside it: the whole file is checked
before anything is registered."""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass

from segmentation import __version__
from segmentation.config import Deployed, valid_cron
from segmentation.errors import SegmentationError

DEPLOYMENT_NAME = "nightly"
SCHEDULE_ENV = "SEGMENTATION_SCHEDULE"
TIMEZONE_ENV = "SEGMENTATION_TIMEZONE"
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
TAGS = ["segmentation", "nightly"]
DESCRIPTION = (
    "Nightly customer segmentation: retrains KMeans on the source table and publishes the segments "
    "for BI in the views segmentation_bi.current_*. Run with other parameters from "
    "the Run button; the run report is in each flow run's Artifacts tab."
)


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str
    timezone: str

    @classmethod
    def from_env(cls) -> ScheduleSettings:
        cron = " ".join((os.environ.get(SCHEDULE_ENV) or DEFAULT_SCHEDULE).split())
        timezone = (os.environ.get(TIMEZONE_ENV) or DEFAULT_TIMEZONE).strip()
        if not valid_cron(cron):
            raise SegmentationError(
                f"{SCHEDULE_ENV}={cron!r} is not a cron expression; use five fields, e.g. '0 2 * * *' for 02:00 daily"
            )
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise SegmentationError(
                f"{TIMEZONE_ENV}={timezone!r} is not an IANA time zone; use e.g. UTC or Europe/Berlin"
            ) from None
        return cls(cron, timezone)


def nightly_deployment(schedule: ScheduleSettings | None = None, deployed: Deployed | None = None):
    """The deployment, not yet registered: the flow's own defaults as parameters, so a
    scheduled run and a UI run without changes are the same run. deployed: a segmentation of the
    segmentations file instead, as customer-segmentation/<its name>, with its schedule and its
    parameters (the flow's defaults for the others)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from segmentation.flows.segmentation import customer_segmentation

    if deployed is not None:
        name, cron, timezone = deployed.name, deployed.schedule.cron, deployed.schedule.timezone
        parameters = deployed.flow_parameters()
        description = configured_description(deployed.name)
    else:
        schedule = schedule or ScheduleSettings.from_env()
        name, cron, timezone, parameters, description = (
            DEPLOYMENT_NAME,
            schedule.cron,
            schedule.timezone,
            None,
            DESCRIPTION,
        )
    return customer_segmentation.to_deployment(
        name=name,
        parameters=parameters,
        schedule=Cron(cron, timezone=timezone),
        # CANCEL_NEW: a run that finds one active ends Cancelled at once instead of queueing
        # behind a run that may be stuck; the run lock in the database backs this up.
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description=description,
        tags=TAGS,
        version=__version__,
        # A module path, not a file path: the served runs import the installed package,
        # whatever the working directory (in the container, say).
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


APPROVAL_DESCRIPTION = (
    "Approve or reject, in the Prefect UI, a segmentation run the quality gate rejected: started by "
    f"{DEPLOYMENT_NAME} runs whose approval_timeout_minutes is above 0. Answer a waiting flow run's form "
    "with Resume on its page."
)


def configured_description(name: str) -> str:
    from segmentation.segmentations import view_name

    return (
        f"Nightly customer segmentation {name}, from the segmentations file: retrains KMeans on its source "
        f"table and publishes the segments for BI in segmentation_bi.{view_name(name, 'current_run')} and "
        "the views beside it. Run with other parameters from the Run button; the run report is in each flow "
        "run's Artifacts tab."
    )


def approval_deployment(name: str = DEPLOYMENT_NAME):
    """No schedule and, on purpose, no concurrency limit: a run waits paused in its process, and
    Prefect revokes a paused run's concurrency slot and then crashes the run (see
    segmentation.tasks.approval). Runs for different runs may wait at once. name: the nightly
    deployment's, whose runs start this one (approve-run/<name>)."""
    from prefect.deployments.runner import EntrypointType

    from segmentation.flows.approval import approve_run

    return approve_run.to_deployment(
        name=name,
        description=APPROVAL_DESCRIPTION,
        tags=TAGS,
        version=__version__,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def deployments(schedule: ScheduleSettings | None = None, configured: list[Deployed] | None = None) -> list:
    """What serve and deploy register: the nightly deployment and approve-run beside it, or,
    with a segmentations file, one of each per segmentation in it."""
    if configured:
        return [d for each in configured for d in (nightly_deployment(deployed=each), approval_deployment(each.name))]
    return [nightly_deployment(schedule), approval_deployment()]


def serve(schedule: ScheduleSettings | None = None, configured: list[Deployed] | None = None) -> None:
    from prefect import serve as prefect_serve

    # pause_on_shutdown=False: stopping or redeploying the server must not silently stop the
    # nightly job; the schedule stays active while no process serves it and the runs wait.
    prefect_serve(*deployments(schedule, configured), pause_on_shutdown=False)


def deploy(
    pool: str,
    image: str | None = None,
    schedule: ScheduleSettings | None = None,
    configured: list[Deployed] | None = None,
) -> list[str]:
    """Register the same deployments (name, schedule, time zone, concurrency limit, parameters,
    description, tags) with a work pool, for teams whose workers run flows (a process worker
    with this package installed, or a Docker worker with `image`) instead of `segmentation
    serve`. Returns the ids of the nightly deployments (one per segmentation of the file)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise SegmentationError(
                f"there is no work pool {pool!r}; create it first, e.g. prefect work-pool create {pool} --type process"
            ) from None
    ids = []
    for deployment in deployments(schedule, configured):
        deployment_id = str(deployment.apply(work_pool_name=pool, image=image))
        if deployment.flow_name == "customer-segmentation":
            ids.append(deployment_id)
    return ids
