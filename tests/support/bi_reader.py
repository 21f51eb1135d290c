"""The BI side: the views a reader may select, what the current_ views must show, and a BI
session reading them in a thread while a test publishes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

# The BI contract: everything in schema segmentation_bi a reader may select.
BI_VIEWS = {
    "current_run",
    "current_customer_segments",
    "current_segments",
    "current_segment_centroids",
    "current_segment_profiles",
    "current_feature_drift",
    "segment_history",
    "run_history",
    "customer_segment_history",
    "customer_segment_spells",
    "current_segment_transitions",
    "current_segment_changes",
    "segmentations",
}


def assert_current_run(conn, run_id) -> None:
    """Every current_ view shows exactly run `run_id`, complete."""
    current, n_customers, k = conn.execute("SELECT run_id, n_customers, k FROM segmentation_bi.current_run").fetchone()
    assert current == run_id
    assert conn.execute(
        "SELECT count(*), count(DISTINCT run_id), min(run_id) FROM segmentation_bi.current_customer_segments"
    ).fetchone() == (n_customers, 1, run_id)
    assert conn.execute(
        "SELECT count(*), sum(n_customers), min(run_id) FROM segmentation_bi.current_segments"
    ).fetchone() == (k, n_customers, run_id)


# One statement, so one snapshot: (current run, its n_customers, sum of the segments' n_customers,
# rows, distinct runs, first run) of current_customer_segments.
READ_CURRENT = """SELECT (SELECT run_id FROM segmentation_bi.current_run),
                          (SELECT n_customers FROM segmentation_bi.current_run),
                          (SELECT sum(n_customers) FROM segmentation_bi.current_segments),
                          count(*), count(DISTINCT run_id), min(run_id)
                   FROM segmentation_bi.current_customer_segments"""


@contextmanager
def bi_reader(database_url: str) -> Iterator[list[tuple]]:
    """A BI session in a thread of its own, reading every current_ view in one statement in a
    loop until the block ends. Yields the list its observations (READ_CURRENT's rows) go into.
    Fails if any read failed."""
    observations: list[tuple] = []

    def read_in_a_loop(stop: threading.Event, errors: list[Exception]) -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                try:
                    observations.append(reader.execute(READ_CURRENT).fetchone())
                except psycopg.Error as exc:
                    errors.append(exc)

    with _in_a_thread(read_in_a_loop):
        yield observations


@contextmanager
def _in_a_thread(loop: Callable[[threading.Event, list[Exception]], None]) -> Iterator[None]:
    """Run loop(stop, errors) in a thread for the block; fail if it recorded any error."""
    errors: list[Exception] = []
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop, errors))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert errors == []


@dataclass
class Readings:
    """What a reconnecting_reader saw: (when, READ_CURRENT's row) for each read, and (when, the
    error) each time its connection was lost or could not be made."""

    observations: list[tuple[float, tuple]] = field(default_factory=list)
    lost: list[tuple[float, str]] = field(default_factory=list)

    def rows(self) -> list[tuple]:
        return [row for _, row in self.observations]

    def times(self) -> list[float]:
        return [at for at, _ in self.observations]

    def seen(self) -> list[int]:
        """The current run of each read, in order, a run once however often it was read."""
        runs = [row[0] for row in self.rows() if row[0] is not None]
        return [run for i, run in enumerate(runs) if i == 0 or runs[i - 1] != run]


@contextmanager
def reconnecting_reader(database_url: str, pause: float = 0.2) -> Iterator[Readings]:
    """A BI session as a BI tool's connection pool keeps one: it reads READ_CURRENT every `pause`
    seconds and, when its connection is lost, connects again through the same URL (every host
    of a multi-host one), until the block ends. Only connection errors are allowed: any other
    error fails the block."""
    readings = Readings()

    def read_in_a_loop(stop: threading.Event, errors: list[Exception]) -> None:
        reader: psycopg.Connection | None = None
        while not stop.is_set():
            try:
                if reader is None or reader.closed:
                    reader = psycopg.connect(database_url, autocommit=True)
                readings.observations.append((time.monotonic(), reader.execute(READ_CURRENT).fetchone()))
            except psycopg.OperationalError as exc:
                readings.lost.append((time.monotonic(), " ".join(str(exc).split())))
                if reader is not None:
                    reader.close()
                reader = None
            except psycopg.Error as exc:
                errors.append(exc)
            stop.wait(pause)
        if reader is not None:
            reader.close()

    with _in_a_thread(read_in_a_loop):
        yield readings


def assert_each_saw_one_complete_run(observations: list[tuple]) -> None:
    """Every observation of bi_reader saw exactly one run, whole, or (before any) nothing."""
    for run_id, n, segment_total, count, distinct, first in observations:
        if run_id is None:
            assert count == 0
            continue
        assert (count, distinct, first, segment_total) == (n, 1, run_id, n)
