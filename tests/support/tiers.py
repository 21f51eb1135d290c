"""The two tiers. `unit` tests (`pytest -m unit`) need no database and no Prefect server: the
pure core, the rules, parsing and text; every other test is an integration test against a
real PostgreSQL and a real Prefect API. conftest.py holds a unit test to that: asking for a
server fixture fails it before the fixture starts anything, and so does a server it started
on its own (Prefect's temporary API server, the embedded PostgreSQL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from segmentation import embedded
from segmentation.settings import Settings

# The fixtures that start or reach a server; every fixture built on them is in a test's
# fixturenames too.
SERVER_FIXTURES = frozenset({"server_url", "template", "database_url", "conn", "prefect_harness", "prefect_server"})


def server_fixtures_refused(nodeid: str, fixturenames: list[str]) -> str | None:
    """Why a unit test may not run with these fixtures, or None."""
    servers = sorted(SERVER_FIXTURES.intersection(fixturenames))
    if not servers:
        return None
    return (
        f"{nodeid} is marked unit but uses {', '.join(servers)}: a unit test needs no database and "
        "no Prefect server; drop the fixture, or drop the unit mark to make it an integration test"
    )


def child_processes() -> dict[int, str]:
    return {p.pid: " ".join(_cmdline(p)) for p in psutil.Process().children(recursive=True) if p.is_running()}


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["(ended)"]


def servers_started(children_before: dict[int, str], data_dir: Path) -> list[str]:
    """What a unit test left running: processes it started (Prefect's temporary API server
    stays up until the interpreter exits), and the embedded PostgreSQL in the session's data
    directory, used when SEGMENTATION_DATABASE_URL is unset; that one is stopped and removed
    here, as it would outlive the tests and be blamed on the next unit test."""
    started = [cmd for pid, cmd in child_processes().items() if pid not in children_before and cmd != "(ended)"]
    pgdata = data_dir / "pgdata"
    if pgdata.exists():
        embedded.stop(Settings(database_url=None, data_dir=data_dir))
        shutil.rmtree(pgdata, ignore_errors=True)
        started.append(f"the embedded PostgreSQL in {pgdata} (now stopped and removed)")
    return started
