"""Opening and closing a run: the database schema, then the Run that owns the run's
connections and transactions (segmentation.store.run)."""

from __future__ import annotations

from dataclasses import replace

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation import db, migrations
from segmentation.outcome import KEPT, Outcome, Status
from segmentation.segmentations import DEFAULT
from segmentation.settings import Settings
from segmentation.store.run import Run


# persist_result=False: Settings hold the database URL and a Run holds live connections;
# neither may be written to result storage, whatever PREFECT_RESULTS_PERSIST_BY_DEFAULT says.
@task(name="prepare-database", cache_policy=NO_CACHE, persist_result=False)
def prepare_database() -> Settings:
    settings = Settings.from_env()
    with db.connect(db.database_url(settings)) as conn:
        applied, roles = migrations.upgrade_with_roles(conn)
        if roles:
            get_run_logger().info("applied %s", migrations.ROLES_SQL.name)
    if applied:
        get_run_logger().info("applied migrations: %s", ", ".join(m.filename for m in applied))
    return settings


@task(name="start-run", cache_policy=NO_CACHE, persist_result=False)
def start_run(
    settings: Settings, source_table: str, features: list[str], params: dict, segmentation: str = DEFAULT
) -> Run:
    logger = get_run_logger()
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    run, abandoned = Run.start(
        settings,
        flow_run_id=flow_run_id,
        source_table=source_table,
        features=features,
        params=params,
        segmentation=segmentation,
    )
    if abandoned:
        logger.warning("marked abandoned runs as failed: %s", ", ".join(map(str, abandoned)))
    if segmentation == DEFAULT:
        logger.info("run %d started", run.run_id)
    else:
        logger.info("run %d of segmentation %s started", run.run_id, segmentation)
    return run


@task(name="fail-run", cache_policy=NO_CACHE)
def fail_run(
    run: Run | None, error: str, source_table: str, segmentation: str = DEFAULT, connection_lost: bool = False
) -> Outcome:
    """Record the failure, and say what became of the run as the database has it: a run kept
    before the error stays what it is, and so does one whose publish committed while the
    connection was lost (after a failover, the new primary's answer). connection_lost: the
    error was the connection going away, so that what the database answers is worth saying."""
    failed = Outcome(
        "failed", run.run_id if run is not None else None, source_table, reasons=(error,), segmentation=segmentation
    )
    if run is None:
        return failed
    status = run.fail(error)
    if status is None:
        get_run_logger().error("could not record the failure of run %d; the next run marks it abandoned", run.run_id)
    if status in KEPT:
        said = f"run {run.run_id} is {status} as the database has it (read again after the error): {error}"
        get_run_logger().warning(said)
        kept: Status = "published" if status == "published" else "staged" if status == "staged" else "rejected"
        return Outcome(kept, run.run_id, source_table, reasons=(said,), segmentation=segmentation)
    if status == "failed" and connection_lost:
        return replace(failed, reasons=(f"{error}; the previous published run stays current",))
    return failed
