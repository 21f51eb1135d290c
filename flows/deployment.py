"""The deployments: `segmentation serve` serves the nightly flow as customer-segmentation/nightly
and, beside it, the approve-run flow as approve-run/nightly (no schedule: the nightly flow starts
it when a run waits for a person's approval); `segmentation deploy` registers both with a work pool."""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass

from segmentation import __version__
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
        if not _valid_cron(cron):
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


def _valid_cron(cron: str) -> bool:
    """Checked with Prefect's own schedule model, so what passes here the server accepts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return False
    return len(cron.split()) == 5 or cron.startswith("@")


def nightly_deployment(schedule: ScheduleSettings | None = None):
    """The deployment, not yet registered: the flow's own defaults as parameters, so a
    scheduled run and a UI run without changes are the same run."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from segmentation.flows.segmentation import customer_segmentation

    schedule = schedule or ScheduleSettings.from_env()
    return customer_segmentation.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=Cron(schedule.cron, timezone=schedule.timezone),
        # CANCEL_NEW: a run that finds one active ends Cancelled at once instead of queueing
        # behind a run that may be stuck; the run lock in the database backs this up.
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description=DESCRIPTION,
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


def approval_deployment():
    """No schedule and, on purpose, no concurrency limit: a run waits paused in its process, and
    Prefect revokes a paused run's concurrency slot and then crashes the run (see
    segmentation.tasks.approval). Runs for different runs may wait at once."""
    from prefect.deployments.runner import EntrypointType

    from segmentation.flows.approval import approve_run

    return approve_run.to_deployment(
        name=DEPLOYMENT_NAME,
        description=APPROVAL_DESCRIPTION,
        tags=TAGS,
        version=__version__,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve(schedule: ScheduleSettings | None = None) -> None:
    from prefect import serve as prefect_serve

    # pause_on_shutdown=False: stopping or redeploying the server must not silently stop the
    # nightly job; the schedule stays active while no process serves it and the runs wait.
    prefect_serve(nightly_deployment(schedule), approval_deployment(), pause_on_shutdown=False)


def deploy(pool: str, image: str | None = None, schedule: ScheduleSettings | None = None) -> str:
    """Register the same deployment (name, schedule, time zone, concurrency limit, parameters,
    description, tags) with a work pool, for teams whose workers run flows (a process worker
    with this package installed, or a Docker worker with `image`) instead of `segmentation
    serve`. Returns the deployment id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise SegmentationError(
                f"there is no work pool {pool!r}; create it first, e.g. prefect work-pool create {pool} --type process"
            ) from None
    approval_deployment().apply(work_pool_name=pool, image=image)
    return str(nightly_deployment(schedule).apply(work_pool_name=pool, image=image))
