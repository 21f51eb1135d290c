"""Processes the tests start and wait on: a process group stopped as a whole, the flow in a
process of its own, and waiting for a condition."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# The virtual environment's commands (segmentation, prefect, dask).
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """A subprocess in its own process group, so stopping it also stops what it started
    (the serve process runs each flow run in a child)."""

    def __init__(self, argv: list[str], env: dict, log: Path):
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - open while the process runs, closed in stop()
        self.popen = subprocess.Popen(argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.running():
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.running() or _group_alive(self.popen.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        self._out.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


FLOW_SCRIPT = """
import json, sys
from segmentation.flows.segmentation import customer_segmentation
state = customer_segmentation(**json.loads(sys.argv[1]), return_state=True)
print(state.message or state.name, flush=True)
sys.exit(0 if state.is_completed() else 3)
"""


def start_flow_process(api_url: str, database_url: str, env: dict | None = None, **params):
    """The flow in a process of its own (to kill it for real), on the session's Prefect API."""
    environment = {**os.environ, "PREFECT_API_URL": api_url, "SEGMENTATION_DATABASE_URL": database_url, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps(params)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
