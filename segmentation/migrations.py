"""Applies the versioned SQL files in sql/ in order, once each, recorded in
segmentation.schema_migrations. Safe to run twice and from two processes at once: the
whole upgrade runs in one transaction under a transaction-level advisory lock.

The files are package data (segmentation/sql in an installed copy), read through
importlib.resources, so an installed wheel finds them from any working directory."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.abc import Traversable
from importlib.resources import files

import psycopg

from segmentation.db import scalar
from segmentation.errors import SegmentationError

log = logging.getLogger(__name__)

SQL_DIR = files("segmentation") / "sql"
ROLES_SQL = SQL_DIR / "roles" / "segmentation_roles.sql"
# Any fixed 64-bit number works; it only has to differ from the run lock.
MIGRATION_LOCK_KEY = 0x5E6_0001
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Traversable

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


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


def upgrade(conn: psycopg.Connection, sql_dir: Traversable = SQL_DIR) -> list[Migration]:
    """Apply pending migrations; returns those applied now (empty when up to date)."""
    migrations = discover(sql_dir)
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
        done = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise SegmentationError(
                        f"{migration.filename} changed after it was applied to this database; "
                        "never edit an applied migration, add a new numbered file instead"
                    )
                continue
            log.info("applying migration %s", migration.filename)
            conn.execute(migration.text)
            conn.execute(
                "INSERT INTO segmentation.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            done.append(migration)
    return done


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


UPGRADE_HINT = "segmentation db upgrade"


def require_current(conn: psycopg.Connection, sql_dir: Traversable = SQL_DIR) -> None:
    """Refuse, in one line naming the fix, a database whose schema is not this version's: no
    segmentation schema yet, or a numbered migration not applied. Only reads: the commands
    that must never change the schema (show, runs, rollback, ...) call this, not upgrade."""
    if scalar(conn, "SELECT to_regclass('segmentation.schema_migrations') IS NULL"):
        raise SegmentationError(f"this database has no segmentation schema yet; create it with: {UPGRADE_HINT}")
    applied = {version for (version,) in conn.execute("SELECT version FROM segmentation.schema_migrations")}
    pending = [m.filename for m in discover(sql_dir) if m.version not in applied]
    if pending:
        more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
        raise SegmentationError(
            f"this database's segmentation schema is older than this version of segmentation ({pending[0]}{more} "
            f"not applied); upgrade it with: {UPGRADE_HINT}"
        )
