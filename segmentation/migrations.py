"""Applies the versioned SQL files in sql/ in order, once each, recorded in
segmentation.schema_migrations, then the files of sql/bi/ that define the BI contract, each
whenever it changed (segmentation.bi_definitions). Safe to run twice and from two processes at
once: the whole upgrade runs in one transaction under a transaction-level advisory lock, which
upgrade owns. pending() tells what an upgrade would apply, without applying or locking anything.

The files are package data (segmentation/sql in an installed copy), read through
importlib.resources, so an installed wheel finds them from any working directory."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib.abc import Traversable
from importlib.resources import files

import psycopg

from segmentation import bi_definitions
from segmentation.bi_definitions import Definition
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.segmentations import CUSTOMER_VIEWS, check_name
from segmentation.sql_files import SqlFile

log = logging.getLogger(__name__)

SQL_DIR = files("segmentation") / "sql"
ROLES_SQL = SQL_DIR / "roles" / "segmentation_roles.sql"
# Any fixed 64-bit number works; it only has to differ from the run lock.
MIGRATION_LOCK_KEY = 0x5E6_0001
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# Migrations rewritten on purpose after release, and the checksums of their earlier versions that
# a database may have applied: those are as good as applied. 001 no longer creates the demo table
# public.customers (the commands that fill it do); a database that got it keeps it.
SUPERSEDED = {1: frozenset({"dcb440f10b97e21e1885e76ae398114a4468c392c1d233d77ebe9e4d65047c73"})}


@dataclass(frozen=True)
class Migration(SqlFile):
    version: int
    name: str
    path: Traversable

    @property
    def filename(self) -> str:
        return self.path.name


def discover(sql_dir: Traversable = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted((p for p in sql_dir.iterdir() if p.name.endswith(".sql") and p.is_file()), key=lambda p: p.name):
        match = _FILE.match(path.name)
        if match is None:
            raise SegmentationError(f"{path.name} is not named like 001_description.sql; rename it")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SegmentationError(f"two files in {sql_dir} share a version number: {versions}")
    return found


def _unapplied(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    for migration in migrations:
        if (
            migration.version in applied
            and applied[migration.version] != migration.checksum
            and applied[migration.version] not in SUPERSEDED.get(migration.version, ())
        ):
            raise SegmentationError(
                f"{migration.filename} changed after it was applied to this database; "
                "never edit an applied migration, add a new numbered file instead"
            )
    return [m for m in migrations if m.version not in applied]


def pending(conn: psycopg.Connection, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """The files `segmentation db upgrade` would apply to this database now, numbered migrations
    first, then BI definitions (bi/<name>.sql): empty when it is up to date. Reads only, takes no
    lock, and runs in the caller's transaction if any; refuses an edited migration as upgrade
    does."""
    applied: dict[int, str] = {}
    if scalar(conn, "SELECT to_regclass('segmentation.schema_migrations') IS NOT NULL"):
        applied = dict(conn.execute("SELECT version, checksum FROM segmentation.schema_migrations"))
    migrations = _unapplied(discover(sql_dir), applied)
    definitions = bi_definitions.outdated(conn, bi_definitions.discover(sql_dir / "bi"), migrating=bool(migrations))
    return [m.filename for m in migrations] + [d.filename for d in definitions]


def upgrade(conn: psycopg.Connection, sql_dir: Traversable = SQL_DIR) -> list[Migration | Definition]:
    """Apply pending migrations, then the BI definitions (bi_definitions.outdated); returns the
    files applied now (empty when up to date)."""
    migrations = discover(sql_dir)
    definitions = bi_definitions.discover(sql_dir / "bi")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        # Checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
        # the schema exists, which the writer role does not have.
        if scalar(conn, "SELECT to_regnamespace('segmentation') IS NULL"):
            conn.execute("CREATE SCHEMA segmentation")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS segmentation.schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied: dict[int, str] = dict(conn.execute("SELECT version, checksum FROM segmentation.schema_migrations"))
        todo = _unapplied(migrations, applied)
        before = bi_definitions.access(conn)
        for migration in todo:
            log.info("applying migration %s", migration.filename)
            conn.execute(migration.text)
            conn.execute(
                "INSERT INTO segmentation.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        outdated = bi_definitions.outdated(conn, definitions, migrating=bool(todo))
        done = bi_definitions.apply(conn, outdated, definitions)
        bi_definitions.restore(conn, before)
    return [*todo, *done]


def add_segmentation(conn: psycopg.Connection, segmentation: str, sql_dir: Traversable = SQL_DIR) -> bool:
    """Make a segmentation known, with its own BI views (bi_definitions.add_segmentation), when it
    is new: when it first runs. Returns whether it was new. One transaction of its own, under the
    migration lock, so that an upgrade re-applying the BI files sees it whole or not at all."""
    check_name(segmentation)
    exists = "SELECT EXISTS (SELECT FROM segmentation.segmentations WHERE name = %s)"
    if scalar(conn, exists, (segmentation,)):
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        if scalar(conn, exists, (segmentation,)):
            return False
        conn.execute("INSERT INTO segmentation.segmentations (name) VALUES (%s)", (segmentation,))
        views = bi_definitions.add_segmentation(conn, segmentation, bi_definitions.discover(sql_dir / "bi"))
    log.info("segmentation %s: created its views %s", segmentation, ", ".join(views))
    return True


def follow_id_type(conn: psycopg.Connection, run_id: int, sql_dir: Traversable = SQL_DIR) -> bool:
    """Make the views of run_id's segmentation speak that run's ids (sql/018): when the run's id
    type differs from the one its views speak, record the new one and create the segmentation's
    views of customers (segmentations.CUSTOMER_VIEWS) again for it, with their owner and grants.
    Returns whether they changed. Runs in the caller's transaction: the switch's
    (segmentation.store.runs.record_switch), so a reader sees the new run with views of its type."""
    row = conn.execute(
        """SELECT r.segmentation, r.id_type FROM segmentation.runs r JOIN segmentation.segmentations s
             ON s.name = r.segmentation
           WHERE r.run_id = %s AND r.id_type IS DISTINCT FROM s.id_type""",
        (run_id,),
    ).fetchone()
    if row is None:
        return False
    segmentation, id_type = row
    conn.execute("UPDATE segmentation.segmentations SET id_type = %s WHERE name = %s", (id_type, segmentation))
    definitions = bi_definitions.discover(sql_dir / "bi")
    before = bi_definitions.access(conn)
    views = [d for d in definitions if d.name in CUSTOMER_VIEWS]
    bi_definitions.apply(conn, views, definitions, only=segmentation)
    bi_definitions.restore(conn, before)
    log.info("segmentation %s: its views now speak %s ids", segmentation, id_type or "integer")
    return True


def apply_roles(conn: psycopg.Connection, path: Traversable = ROLES_SQL) -> bool:
    """Create the writer and reader roles and their grants when this connection may;
    returns False (and changes nothing) when it may not, so a DBA runs the file instead."""
    if not scalar(conn, "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"):
        return False
    with conn.transaction():
        # Serialised like the migrations, within this database (an advisory lock is the
        # database's own); the roles themselves are cluster-wide, see the file.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        # Grants and owner changes lock their objects: give up rather than queue BI readers
        # behind a long-running query.
        conn.execute("SET LOCAL lock_timeout = '10s'")
        conn.execute(path.read_text(encoding="utf-8"))
    return True


def upgrade_with_roles(conn: psycopg.Connection) -> tuple[list[Migration | Definition], bool]:
    """What every command that creates or upgrades the schema on its way does (a run, demo,
    load-csv, generate): pending migrations, then, when any were applied, the roles and their
    grants (apply_roles) when this login may. Only after new migrations: re-owning objects takes
    locks BI readers would queue behind. (`db upgrade` applies the roles every time.) Returns
    the migrations applied and whether the roles were applied."""
    applied = upgrade(conn)
    return applied, bool(applied) and apply_roles(conn)


UPGRADE_HINT = "segmentation db upgrade"


def require_current(conn: psycopg.Connection, sql_dir: Traversable = SQL_DIR) -> None:
    """Refuse, in one line naming the fix, a database whose schema is not this version's: no
    segmentation schema yet, or a numbered migration or BI definition not applied (`pending`).
    Only reads: the commands that must never change the schema (show, runs, rollback, ...) call
    this, not upgrade."""
    if scalar(conn, "SELECT to_regclass('segmentation.schema_migrations') IS NULL"):
        raise SegmentationError(f"this database has no segmentation schema yet; create it with: {UPGRADE_HINT}")
    stale = pending(conn, sql_dir)
    if stale:
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise SegmentationError(
            f"this database's segmentation schema is older than this version of segmentation ({stale[0]}{more} "
            f"not applied); upgrade it with: {UPGRADE_HINT}"
        )
