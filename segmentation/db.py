"""Connections to the database.

Who commits: every connection opened here is in autocommit mode, and a transaction is always
an explicit `with conn.transaction():` block, opened by the function that owns that unit of
work: a method of segmentation.store.run.Run for a flow run (Run.prune hands its connection to
segmentation.store.retention, which owns its transactions; Run.start has
migrations.add_segmentation create a new segmentation in a transaction of its own); for the command line and the
report and approval tasks, each with a connection segmentation.operations opens for it: loading.load_csv, loading.has_customers, loading.generate_customers, crm_shape.generate,
migrations.upgrade, migrations.apply_roles, rollback.make_current (a promotion, a rollback, an
approval: operations.decide), purge.purge, and the reads of operations.read_run, list_runs and
run_outcome; and on a Dask worker, segmentation.store.range_pass.score_range for its range. The SQL helpers
those call (segmentation.store.runs, .partitions, .spells, .history, .scoring, .readback,
segmentation.source) take a connection and never begin, commit or roll back: they run in their
caller's transaction, or as single autocommitted statements. The one exception is a
run's snapshot: a connection whose transaction is the snapshot itself (see Run)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from segmentation import dburl, embedded
from segmentation.errors import SegmentationError
from segmentation.settings import DATABASE_URL_ENV, Settings, connect_attempts, libpq_url

log = logging.getLogger(__name__)

WRITER_ROLE = "segmentation_writer"


def database_url(settings: Settings | None = None) -> str:
    """The libpq URL to use: SEGMENTATION_DATABASE_URL, or the embedded server started on demand."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return libpq_url(settings.database_url)
    return embedded.database_url(settings)


def connect(url: str, *, application_name: str = "segmentation", server: str | None = None) -> psycopg.Connection:
    """An autocommit connection, retrying with backoff while the server is unreachable. With a
    multi-host URL libpq tries every host in turn on each attempt (the first that accepts, and
    that target_session_attrs allows, wins). server: the identity (server_identity) the
    connection must reach: a session that belongs to a run (its snapshot, a second reader,
    a Dask worker's range) must be on the run's server; on another one, after a failover,
    it is closed and the run fails (ServerChanged), never retried."""
    attempts = connect_attempts()
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            conn = psycopg.connect(url, autocommit=True, application_name=application_name)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            if attempt == attempts:
                raise SegmentationError(
                    f"cannot connect to PostgreSQL at {dburl.redact(url)} after {attempts} attempt(s): "
                    f"{reason}. Check {DATABASE_URL_ENV} and that the server is running."
                ) from None
            log.warning("database unreachable (attempt %d of %d), retrying in %.0f s", attempt, attempts, delay)
            time.sleep(delay)
            delay *= 2
            continue
        try:
            if server is not None:
                check_server(conn, server)
            assume_writer_role(conn)
        except BaseException:
            conn.close()
            raise
        return conn
    raise AssertionError("unreachable")


class WrongDatabase(SegmentationError):
    """A session of a run (a Dask worker's, with its own settings) reached another database than
    the run's on the same server: a misconfigured URL, not a failover."""


class ServerChanged(SegmentationError):
    """A session of a run reached another server than the run's own (a failover, a restart):
    the run's snapshot and its uncommitted work are not there."""


def server_identity(conn: psycopg.Connection) -> str:
    """Which server and database a connection reached, as one line: the cluster's system
    identifier, when its postmaster started, and the database. A standby made with pg_basebackup
    shares its primary's system identifier, and a promoted standby keeps it, but each server (and
    each restart of one) has its own start time. Not its address: one server may be reached at
    several (localhost as 127.0.0.1 or ::1). Read in autocommit: on a snapshot connection it must
    not begin the snapshot."""
    row = conn.execute(
        """SELECT (SELECT system_identifier FROM pg_control_system()),
                  to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
                  current_database()"""
    ).fetchone()
    assert row is not None
    return f"system {row[0]}, up since {row[1]} UTC{_DATABASE}{row[2]}"


_DATABASE = ", database "  # the last part of a server_identity


def check_server(conn: psycopg.Connection, server: str) -> None:
    """Raise ServerChanged, one line, when conn is not on the server `server` identifies, or
    WrongDatabase when it is on that server but in another database."""
    found = server_identity(conn)
    found_server, _, found_database = found.rpartition(_DATABASE)
    run_server, _, run_database = server.rpartition(_DATABASE)
    if found_server == run_server and found_database != run_database:
        raise WrongDatabase(
            f"a session of the run reached the database {found_database!r}, not the run's {run_database!r}, "
            "on the same server: every process of a run (the flow and each Dask worker) must use the same "
            f"database URL; fix the workers' {DATABASE_URL_ENV} (or the Secret block it is read from)"
        )
    if found != server:
        address = scalar(
            conn, "SELECT coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'a local socket')"
        )
        raise ServerChanged(
            f"a session of the run reached another PostgreSQL server (at {address}: {found}) than the run's "
            f"({server}): a failover or restart during the run lost its snapshot, so the run fails rather than "
            "continue on another server; the previous published run stays current, and the next run starts "
            "afresh on the server that answers now"
        )


def assume_writer_role(conn: psycopg.Connection) -> bool:
    """A login role that is a member of segmentation_writer acts as it, so what a run
    creates (its partition) is owned by the writer role, whichever login created it."""
    row = conn.execute(
        """SELECT NOT r.rolsuper AND pg_has_role(current_user, w.oid, 'MEMBER') AND current_user <> w.rolname
           FROM pg_roles r, pg_roles w WHERE r.rolname = current_user AND w.rolname = %s""",
        (WRITER_ROLE,),
    ).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
    return bool(row and row[0])


def give_to_writer(conn: psycopg.Connection, kind: str, name: sql.Composable) -> None:
    """Make an object this session just created belong to segmentation_writer, whoever is
    logged in (a superuser, say, which does not act as the writer): a later run under a writer
    login must be able to drop it at retention. kind: TABLE or FUNCTION; name as in ALTER."""
    row = conn.execute(
        """SELECT current_user <> w.rolname AND (r.rolsuper OR pg_has_role(current_user, w.oid, 'MEMBER'))
           FROM pg_roles r, pg_roles w WHERE r.rolname = current_user AND w.rolname = %s""",
        (WRITER_ROLE,),
    ).fetchone()
    if row and row[0]:  # no row: the writer role does not exist here
        conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), name, sql.Identifier(WRITER_ROLE)))


def connect_snapshot(url: str, *, application_name: str, server: str | None = None) -> psycopg.Connection:
    """A connection for reading one consistent snapshot of the source. Its transactions are
    REPEATABLE READ READ ONLY, set through psycopg's attributes: the transaction that begins
    with its first statement is the snapshot, and whoever opened the connection ends it.
    server: the server it must reach (see connect)."""
    conn = connect(url, application_name=application_name, server=server)
    conn.autocommit = False
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def scalar(
    conn: psycopg.Connection, query: str | sql.SQL | sql.Composed, params: Sequence[object] | None = None
) -> Any:
    """The first column of the one row a query returns."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the query returned no row")
    return row[0]
