"""The nightly deployment: `segmentation serve` serves the flow as customer-segmentation/nightly."""

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


def serve(schedule: ScheduleSettings | None = None) -> None:
    from prefect import serve as prefect_serve

    # pause_on_shutdown=False: stopping or redeploying the server must not silently stop the
    # nightly job; the schedule stays active while no process serves it and the runs wait.
    prefect_serve(nightly_deployment(schedule), pause_on_shutdown=False)


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
    return str(nightly_deployment(schedule).apply(work_pool_name=pool, image=image))
