"""A real Prefect server for the tests that need one (serve, events, work pools), and what its
clients need: their own Prefect home and the server's credentials."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.processes import BIN, Process, free_port, tail, wait_for

# The real Prefect server requires this (basic auth), as the compose stack's does; every
# client process of the tests sends it.
PREFECT_AUTH = f"segmentation-tests:{uuid.uuid4().hex}"


def base_env(home: Path) -> dict:
    """A Prefect process's environment: its own home, and the server's credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_AUTH_STRING=PREFECT_AUTH)
    return env


@contextmanager
def prefect_client_settings(api_url: str) -> Iterator[None]:
    """This process's Prefect client pointed at the real server, with its credentials."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: PREFECT_AUTH}):
        yield


@contextmanager
def running_prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` with its own home and SQLite database under tmp_path, on a free
    port, without the UI; yields its API URL once it answers, and stops it at the end."""
    port = free_port()
    env = base_env(tmp_path / "prefect-home")
    env["PREFECT_SERVER_UI_ENABLED"] = "false"
    env["PREFECT_SERVER_API_AUTH_STRING"] = PREFECT_AUTH
    server = Process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "server.log",
    )
    try:
        url = f"http://127.0.0.1:{port}/api"

        def healthy():
            assert server.running(), f"prefect server exited:\n{tail(server.log)}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            wait_for(healthy, 60, 0.25, "the Prefect server")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{tail(server.log)}") from None
        yield url
    finally:
        server.stop()
