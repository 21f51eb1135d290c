"""Opening and closing a run: the database, the run lock, the runs row, the snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation import db, migrations, runs
from segmentation.errors import SegmentationError
from segmentation.settings import Settings


@dataclass
class RunContext:
    """What the tasks of one run share. `conn` holds the run lock and does every write;
    `snapshot` reads the source inside one REPEATABLE READ transaction, so every read of
    the run sees the same version of the table."""

    run_id: int
    settings: Settings
    conn: psycopg.Connection
    snapshot: psycopg.Connection
    notes: dict = field(default_factory=dict)


@task(name="prepare-database", cache_policy=NO_CACHE)
def prepare_database() -> Settings:
    settings = Settings.from_env()
    url = db.database_url(settings)
    with db.connect(url) as conn:
        applied = migrations.upgrade(conn)
        # Only after new migrations: re-owning objects takes locks BI readers would queue behind.
        if applied and migrations.apply_roles(conn):
            get_run_logger().info("applied %s", migrations.ROLES_SQL.name)
    if applied:
        get_run_logger().info("applied migrations: %s", ", ".join(m.path.name for m in applied))
    return settings


@task(name="start-run", cache_policy=NO_CACHE)
def start_run(settings: Settings, flow_run_id: str | None, source_table: str, features: list[str], params: dict) -> RunContext:
    logger = get_run_logger()
    url = db.database_url(settings)
    conn = db.connect(url, application_name="segmentation-run")
    try:
        runs.acquire_run_lock(conn)
        abandoned = runs.mark_abandoned(conn)
        if abandoned:
            logger.warning("marked abandoned runs as failed: %s", ", ".join(map(str, abandoned)))
        run_id = runs.start_run(
            conn, flow_run_id=flow_run_id, source_table=source_table, features=features, params=params
        )
        snapshot = db.connect(url, application_name="segmentation-snapshot")
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    except BaseException:
        conn.close()
        raise
    logger.info("run %d started", run_id)
    return RunContext(run_id, settings, conn, snapshot)


@task(name="fail-run", cache_policy=NO_CACHE)
def fail_run(run: RunContext, error: str) -> None:
    try:
        run.conn.rollback()
        runs.fail_run(run.conn, run.run_id, error)
        return
    except psycopg.Error:
        pass  # the run's connection itself may be what failed: record it on a fresh one
    try:
        with db.connect(db.database_url(run.settings)) as conn:
            runs.fail_run(conn, run.run_id, error)
    except (psycopg.Error, SegmentationError) as exc:
        # The next run marks this one abandoned.
        get_run_logger().error("could not record the failure of run %d: %s", run.run_id, exc)


def close_run(run: RunContext) -> None:
    for conn in (run.snapshot, run.conn):
        try:
            conn.close()  # closing the run connection also releases the run lock
        except psycopg.Error:
            pass
