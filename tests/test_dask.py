"""The passes over the source on Dask (the extract, the scoring pass), against a real `dask
scheduler` and two `dask worker` processes: the same results as in one process, a worker killed
mid-range, a database error in one range, an unreachable scheduler; and a range written twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from segmentation import dburl
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.core.model import Scaler
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.passes import Centroids
from segmentation.settings import Settings
from segmentation.source.catalog import Source
from segmentation.store import history, range_pass
from segmentation.store.run import Run
from segmentation.tasks import dask as run_cluster
from segmentation.tasks.extract import extract_range
from support.bi_reader import assert_current_run
from support.processes import Process, free_port, wait_for

# With pytest-xdist, on one worker: the module's scheduler and workers start once.
pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.xdist_group("dask")]

BIN = Path(sys.executable).parent
ROWS = 60_000
# The training set a sample, so the scoring pass reads the source again, on Dask; small chunks,
# so a range has several.
SAMPLED = {"SEGMENTATION_TRAINING_SAMPLE_SIZE": "20000", "SEGMENTATION_CHUNK_ROWS": "2000"}
# Every customer in the training set: the extract on Dask, the scoring pass from memory.
WHOLE = {**SAMPLED, "SEGMENTATION_TRAINING_SAMPLE_SIZE": str(2 * ROWS)}
# What a range's session runs, by pass: the extract only reads; the scoring pass's writer COPYs in.
PASS_QUERY = {"extract": "%TO STDOUT%", "score": "%FROM STDIN%"}
# Staged, so every run is compared with (and takes its segment ids from) the same current run.
PARAMS = {"n_clusters": 4, "n_init": 1, "publish": False}


# The workers read the database URL from this Prefect Secret block: each test saves its own
# database's URL in it, so one cluster serves the module (a cluster takes seconds to start).
SECRET = "segmentation-dask-tests-database"


class Cluster:
    """A scheduler and two single-threaded workers, each its own process; a worker that a test
    killed is replaced before the next test."""

    def __init__(self, tmp_path: Path, env: dict):
        self.tmp_path, self.env = tmp_path, env
        scheduler_file = tmp_path / "scheduler.json"
        argv = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
        self.scheduler = Process([*argv, "--scheduler-file", str(scheduler_file)], env, tmp_path / "scheduler.log")
        self.workers: list[Process] = []
        self.address = wait_for(
            lambda: scheduler_file.exists() and json.loads(scheduler_file.read_text() or "{}").get("address"),
            30,
            0.2,
            "the Dask scheduler to start",
        )
        self.heal()

    def heal(self) -> None:
        from distributed import Client

        self.workers = [w for w in self.workers if w.running()]
        while len(self.workers) < 2:
            n = len(list(self.tmp_path.glob("worker-*.log")))
            argv = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
            self.workers.append(Process([*argv, "--name", f"worker-{n}"], self.env, self.tmp_path / f"worker-{n}.log"))
        with Client(self.address, timeout="10s") as client:
            client.wait_for_workers(2, timeout=60)

    def use_database(self, url: str) -> None:
        """Save url in the workers' Secret block, and wait until the scheduler has exactly this
        cluster's two workers and each reads url from the block, as its range tasks will."""
        from distributed import Client
        from prefect.blocks.system import Secret

        from segmentation import db

        Secret(value=url).save(SECRET, overwrite=True)
        deadline, seen = time.monotonic() + 30, {}
        with Client(self.address, timeout="10s") as client:
            while time.monotonic() < deadline:
                seen = client.run(lambda: db.database_url(Settings.from_env()))
                if len(seen) == 2 and set(seen.values()) == {url}:
                    return
                time.sleep(0.5)
        raise AssertionError(f"the Dask workers did not read {dburl.redact(url)} from the Secret block: {seen}")

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            process.stop()


@pytest.fixture(scope="module")
def standing_cluster(prefect_harness, tmp_path_factory):
    """The workers take the database URL from the Secret block, as a real cluster's may, and
    nothing else of this process's settings but the Prefect API's address."""
    tmp_path = tmp_path_factory.mktemp("dask")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SEGMENTATION_"))}
    # The workers report to the tests' Prefect API (without it each would start a temporary
    # server of its own on its first task).
    env.update(PREFECT_API_URL=prefect_harness, PREFECT_HOME=str(tmp_path / "prefect-home"))
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(SEGMENTATION_DATABASE_URL_SECRET=SECRET, **SAMPLED)
    cluster = Cluster(tmp_path, env)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def dask_cluster(standing_cluster, database_url):
    standing_cluster.heal()
    standing_cluster.use_database(database_url)
    return standing_cluster


def run(params: dict | None = None, **env) -> object:
    """A run with these settings in the environment, back as they were afterwards (and these
    flow parameters instead of PARAMS)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: v for k, v in env.items() if v is not None})
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
    try:
        return customer_segmentation(**(params or PARAMS), return_state=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rows_of(conn, run_id):
    return conn.execute(
        f"SELECT customer_id, segment_id, distance, margin FROM segmentation.customer_segments_run_{run_id} ORDER BY 1"
    ).fetchall()


def figures_of(conn, run_id):
    segments = conn.execute(
        "SELECT segment_id, n_customers, n_outliers, share, share_female, share_male FROM segmentation.segments "
        "WHERE run_id = %s ORDER BY 1",
        (run_id,),
    ).fetchall()
    centroids = conn.execute(
        "SELECT segment_id, feature || coalesce('=' || level, ''), centroid, mean, stddev, min, max "
        "FROM segmentation.segment_centroids WHERE run_id = %s ORDER BY 1, 2",
        (run_id,),
    ).fetchall()
    return segments, centroids


def assert_same_run(conn, here: int, there: int) -> None:
    a, b = rows_of(conn, here), rows_of(conn, there)
    assert len(a) == len(b) == conn.execute("SELECT count(*) FROM public.customers").fetchone()[0]
    assert [r[:2] for r in a] == [r[:2] for r in b]  # every customer, the same segment id
    assert max(abs(x[2] - y[2]) for x, y in zip(a, b)) <= 1e-9
    assert max(abs(x[3] - y[3]) for x, y in zip(a, b)) <= 1e-9  # the margin, written by the ranges too
    (segments_a, centroids_a), (segments_b, centroids_b) = figures_of(conn, here), figures_of(conn, there)
    assert [s[:3] for s in segments_a] == [s[:3] for s in segments_b]  # outliers counted range by range
    for x, y in zip(segments_a + centroids_a, segments_b + centroids_b):
        assert x[:2] == y[:2] and x[2:] == pytest.approx(y[2:], rel=1e-12, abs=1e-12)


def published_run(conn, seed: int) -> int:
    generate_customers(conn, ROWS, seed=seed)
    state = customer_segmentation(n_clusters=4, n_init=1, return_state=True)
    assert state.is_completed(), state.message
    return state.result()["run_id"]


DRIFT = (
    "SELECT previous_run_id, customers_compared, customers_changed, churn, adjusted_rand_index, customers_added, "
    "customers_removed FROM segmentation.runs WHERE run_id = %s"
)


def churn(conn) -> None:
    """Since the published run: customers left (the ten smallest ids among them, so the new
    run's ids start after some of the published run's), some changed enough to move, and new
    ones arrived."""
    conn.execute(
        "DELETE FROM public.customers WHERE customer_id IN "
        "(SELECT customer_id FROM public.customers ORDER BY customer_id LIMIT 10) OR customer_id % 50 = 7"
    )
    conn.execute("UPDATE public.customers SET spending_score = 101 - spending_score WHERE customer_id % 20 = 3")
    generate_customers(conn, 1_500, seed=79)


def straightforward_drift(conn, previous: int, run_id: int) -> tuple:
    """(compared, changed, added, removed) of run_id against previous, by a full join."""
    return conn.execute(
        f"""SELECT count(*) FILTER (WHERE a.customer_id IS NOT NULL AND b.customer_id IS NOT NULL),
                   count(*) FILTER (WHERE a.segment_id <> b.segment_id),
                   count(*) FILTER (WHERE a.customer_id IS NULL), count(*) FILTER (WHERE b.customer_id IS NULL)
            FROM segmentation.customer_segments_run_{previous} a
            FULL JOIN segmentation.customer_segments_run_{run_id} b USING (customer_id)"""
    ).fetchone()


def test_dask_gives_the_same_run_as_one_process(conn, dask_cluster, monkeypatch):
    first_id = published_run(conn, seed=71)
    churn(conn)
    # The drift is found in memory on both routes, as the rows are written: the SQL comparison
    # is not needed.
    monkeypatch.setattr(history, "measure_drift", lambda *_: pytest.fail("the drift was measured in SQL"))
    here = run(**SAMPLED)
    assert here.is_completed(), here.message
    there = run(**SAMPLED, SEGMENTATION_DASK_ADDRESS=dask_cluster.address, SEGMENTATION_DASK_SESSIONS="2")
    assert there.is_completed(), there.message
    here_id, there_id = here.result()["run_id"], there.result()["run_id"]
    assert_same_run(conn, here_id, there_id)
    drift = conn.execute(DRIFT, (there_id,)).fetchone()
    assert drift == conn.execute(DRIFT, (here_id,)).fetchone()
    compared, changed, added, removed = straightforward_drift(conn, first_id, there_id)
    assert drift[0] == first_id and (drift[1], drift[2], drift[5], drift[6]) == (compared, changed, added, removed)
    assert changed > 0 and added == 1_500 and removed > 10, (changed, added, removed)
    params = conn.execute("SELECT params FROM segmentation.runs WHERE run_id = %s", (there_id,)).fetchone()[0]
    assert (params["dask_address"], params["dask_sessions"], params["dask_workers"]) == (
        dask_cluster.address,
        2,
        None,
    )
    # One Prefect task per range of ids (4 a worker) and pass, each Completed, in the flow run.
    assert range_tasks(there) == {"extract-range": ["Completed"] * 8, "score-range": ["Completed"] * 8}
    # A temporary local cluster of worker processes gives the same run too.
    local = run(**SAMPLED, SEGMENTATION_DASK_WORKERS="2")
    assert local.is_completed(), local.message
    assert_same_run(conn, here_id, local.result()["run_id"])
    # Every customer trained on: each range sends all its rows, and the scoring pass needs no
    # second read, so it stays here.
    whole_here = run(**WHOLE)
    whole_there = run(**WHOLE, SEGMENTATION_DASK_ADDRESS=dask_cluster.address)
    assert whole_here.is_completed() and whole_there.is_completed(), whole_there.message
    assert_same_run(conn, whole_here.result()["run_id"], whole_there.result()["run_id"])
    assert range_tasks(whole_there) == {"extract-range": ["Completed"] * 8}


def test_dask_gives_the_same_run_as_one_process_with_feature_specs(conn, dask_cluster):
    """log1p, a clip, a category, days_since and a missing-value segment: the plan travels to
    the range tasks, and the ranges read and score as the process does."""
    from segmentation import crm_shape

    crm_shape.generate(conn, 30_000, 5, "crm")
    conn.execute(
        """CREATE TABLE public.rfm AS SELECT row_number() OVER (ORDER BY id)::bigint AS customer_id, r.*
           FROM crm.customer_rfm r"""
    )
    conn.execute("ALTER TABLE public.rfm ADD PRIMARY KEY (customer_id)")
    params = {
        **PARAMS,
        "source_table": "public.rfm",
        "features": [
            "recency_days:log1p:missing=segment",
            "frequency:log1p",
            "monetary:log1p:clip=0.99",
            "plan:category",
            "signup_date:days_since",
        ],
        "min_segment_share": 0.0,
        "max_quarantined_share": 1.0,
    }
    # Published first, so both staged runs take their segment ids from it.
    assert run({**params, "publish": True}, **SAMPLED).is_completed()
    here = run(params, **SAMPLED)
    there = run(params, **SAMPLED, SEGMENTATION_DASK_ADDRESS=dask_cluster.address)
    assert here.is_completed() and there.is_completed(), there.message
    here_id, there_id = here.result()["run_id"], there.result()["run_id"]
    a, b = rows_of(conn, here_id), rows_of(conn, there_id)
    assert len(a) == len(b) == 30_000
    assert [r[:2] for r in a] == [r[:2] for r in b]
    (segments_a, centroids_a), (segments_b, centroids_b) = figures_of(conn, here_id), figures_of(conn, there_id)
    assert len(segments_a) == 5 and [s[:2] for s in segments_a] == [s[:2] for s in segments_b]
    assert any(c[1] == "plan=pro" for c in centroids_a)
    for x, y in zip(segments_a + centroids_a, segments_b + centroids_b, strict=True):
        # Days are counted to each run's own start, a few seconds apart.
        close = {"abs": 0.01} if x[1] == "signup_date" else {"rel": 1e-9, "abs": 1e-9}
        assert x[:2] == y[:2] and x[2:] == pytest.approx(y[2:], **close)
    assert range_tasks(there) == {"extract-range": ["Completed"] * 8, "score-range": ["Completed"] * 8}


def test_workers_and_the_flow_take_a_multi_host_url(conn, database_url, dask_cluster, monkeypatch):
    """A high-availability URL (docs/operations.md#high-availability), its first host refusing
    connections as a stopped primary does: the flow and every worker connect through the host
    that answers, and each range's session is checked to be on the run's server."""
    [(host, port)] = dburl.hosts(dburl.parse(database_url))
    refusing = free_port()  # nothing listens there
    multi_host = dburl.replace(
        database_url,
        host=f"127.0.0.1,{host}",
        port=f"{refusing},{port}",
        target_session_attrs="read-write",
        connect_timeout="5",
    )
    dask_cluster.use_database(multi_host)
    generate_customers(conn, ROWS, seed=83)
    state = run(**SAMPLED, SEGMENTATION_DATABASE_URL=multi_host, SEGMENTATION_DASK_ADDRESS=dask_cluster.address)
    assert state.is_completed(), state.message
    assert range_tasks(state) == {"extract-range": ["Completed"] * 8, "score-range": ["Completed"] * 8}
    run_id = state.result()["run_id"]
    assert conn.execute(f"SELECT count(*) FROM segmentation.customer_segments_run_{run_id}").fetchone() == (ROWS,)


def test_text_ids_on_dask(conn, dask_cluster):
    """A source with text ids (keyed by hash; docs/design.md#customer-ids) on Dask: the ranges are
    ranges of keys, the first run records every id in the map, the same run as in one process,
    and a later run records only its arrivals; the views speak the text ids."""
    generate_customers(conn, ROWS, seed=89)
    conn.execute(
        """CREATE TABLE public.text_customers AS
           SELECT 'cus_' || substr(md5(customer_id::text), 1, 14) AS id, gender, age, annual_income, spending_score
           FROM public.customers"""
    )
    conn.execute("ALTER TABLE public.text_customers ADD PRIMARY KEY (id)")
    params = {**PARAMS, "source_table": "public.text_customers", "id_column": "id", "segmentation": "texts"}
    on_dask = {**SAMPLED, "SEGMENTATION_DASK_ADDRESS": dask_cluster.address}
    there = run({**params, "publish": True}, **on_dask)
    assert there.is_completed(), there.message
    assert range_tasks(there) == {"extract-range": ["Completed"] * 8, "score-range": ["Completed"] * 8}
    here = run(params, **SAMPLED)
    assert here.is_completed(), here.message
    assert_same_run(conn, here.result()["run_id"], there.result()["run_id"])
    recorded = "SELECT count(*) FROM segmentation.customer_ids WHERE segmentation = 'texts'"
    assert conn.execute(recorded).fetchone() == (ROWS,)
    conn.execute(
        """INSERT INTO public.text_customers
           SELECT 'new_' || i, 'Female', 30, 50 + i % 40, 40 + i % 50 FROM generate_series(1, 500) AS i"""
    )
    later = run({**params, "publish": True}, **on_dask)
    assert later.is_completed(), later.message
    assert conn.execute(recorded).fetchone() == (ROWS + 500,)
    # Every customer in the view, by the id the source has, joined with no cast.
    assert conn.execute(
        """SELECT count(*), count(c.id), min(s.run_id), max(s.run_id)
           FROM segmentation_bi.texts_customer_segments AS s LEFT JOIN public.text_customers AS c ON c.id = s.customer_id"""
    ).fetchone() == (ROWS + 500, ROWS + 500, later.result()["run_id"], later.result()["run_id"])


def range_tasks(state) -> dict[str, list[str]]:
    """The states of the flow run's range tasks, by task."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    found: dict[str, list[str]] = {}
    for t in task_runs:
        name = t.name.rsplit("-", 1)[0]
        if name.endswith("-range"):
            found.setdefault(name, []).append(t.state.name)
    return {name: sorted(states) for name, states in found.items()}


def range_sessions(conn, during: str, *, held_up: bool = False) -> list:
    """(backend pid, pid of the worker process holding it) of the range sessions busy now in
    the given pass; held_up: only those waiting for a lock (see HoldUp)."""
    return [
        (pid, int(name.rsplit("-", 1)[1]))
        for pid, name in conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE 'segmentation-range-%%' "
            "AND datname = current_database() AND state <> 'idle' AND query LIKE %s "
            "AND (NOT %s OR wait_event_type = 'Lock')",
            (PASS_QUERY[during], held_up),
        )
    ]


class HoldUp:
    """The ranges of a pass that start from now on wait where they open the table the pass's
    session reads or writes (the source for the extract, the run's table for the scoring pass),
    until released: this test's ACCESS EXCLUSIVE lock on it, queued behind the sessions already
    there. A range caught waiting is certainly in the middle: a range caught running may end
    between the test seeing it and the test's fault (a range of the extract takes a fraction of
    a second)."""

    def __init__(self, conn, database_url: str, during: str):
        if during == "extract":
            table = "public.customers"
        else:
            run_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
            table = f"segmentation.customer_segments_run_{run_id}"
        self._locker = psycopg.connect(database_url)  # the lock's transaction
        self._thread = threading.Thread(target=self._lock, args=(table,))
        self._thread.start()

    def _lock(self, table: str) -> None:
        with contextlib.suppress(psycopg.errors.QueryCanceled):
            self._locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")

    def release(self, conn) -> None:
        # Still queued: cancelled; granted: the cancel finds the session idle, which ignores it.
        conn.execute("SELECT pg_cancel_backend(%s)", (self._locker.info.backend_pid,))
        self._thread.join()
        self._locker.rollback()
        self._locker.close()


@contextlib.contextmanager
def held_up_range(conn, database_url: str, during: str) -> Iterator[tuple[int, int]]:
    """A range of the pass held up (see HoldUp) while the block runs: (backend pid, pid of the
    worker process holding it)."""
    wait_for(lambda: range_sessions(conn, during), 60, 0.02, f"a range in the {during}")
    hold_up = HoldUp(conn, database_url, during)
    try:
        yield wait_for(
            lambda: next(iter(range_sessions(conn, during, held_up=True)), None), 60, 0.02, "a held-up range"
        )
    finally:
        hold_up.release(conn)


def worker_holding(cluster: Cluster, process_id: int) -> Process | None:
    return next((w for w in cluster.workers if w.running() and w.popen.pid == process_id), None)


def in_background(**env) -> tuple[threading.Thread, list]:
    states: list = []
    thread = threading.Thread(target=lambda: states.append(run(**env)))
    thread.start()
    return thread, states


@pytest.mark.parametrize("during", ["extract", "score"])
def test_a_worker_killed_mid_range_is_retried_and_every_customer_is_written_once(
    conn, database_url, dask_cluster, during
):
    published_run(conn, seed=72)
    reference = run(**SAMPLED)
    assert reference.is_completed(), reference.message
    thread, states = in_background(**SAMPLED, SEGMENTATION_DASK_ADDRESS=dask_cluster.address)
    with held_up_range(conn, database_url, during) as (_, process_id):
        victim = worker_holding(dask_cluster, process_id)
        assert victim is not None
        os.kill(victim.popen.pid, signal.SIGKILL)
    thread.join(120)
    assert not victim.running()
    state = states[0]
    assert state.is_completed(), state.message
    assert_same_run(conn, reference.result()["run_id"], state.result()["run_id"])


@pytest.mark.parametrize("during", ["extract", "score"])
def test_a_database_error_in_one_range_fails_the_run_and_publishes_nothing(conn, database_url, dask_cluster, during):
    first_id = published_run(conn, seed=73)
    thread, states = in_background(**SAMPLED, SEGMENTATION_DASK_ADDRESS=dask_cluster.address)
    with held_up_range(conn, database_url, during) as (pid, _):
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join(120)
    state = states[0]
    assert state.is_failed()
    assert "\n" not in state.message and "terminat" in state.message, state.message
    failed = conn.execute("SELECT run_id, status FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert failed[1] == "failed"
    # Nothing of it is left: no table, attached or not; the first run is still the current one.
    assert conn.execute("SELECT to_regclass(%s)", (f"segmentation.customer_segments_run_{failed[0]}",)).fetchone() == (
        None,
    )
    assert_current_run(conn, first_id)


def test_an_unreachable_scheduler_fails_the_run_at_once_with_one_line(conn):
    generate_customers(conn, 5_000, seed=74)
    started = time.monotonic()
    state = run(
        **{**SAMPLED, "SEGMENTATION_TRAINING_SAMPLE_SIZE": "1000"}, SEGMENTATION_DASK_ADDRESS="tcp://127.0.0.1:1"
    )
    assert time.monotonic() - started < 40
    assert state.is_failed()
    assert state.message.startswith("cannot reach the Dask scheduler at tcp://127.0.0.1:1"), state.message
    assert state.message.endswith("start it, or fix or unset SEGMENTATION_DASK_ADDRESS")
    assert conn.execute("SELECT status FROM segmentation.runs").fetchall() == [("failed",)]


@contextlib.contextmanager
def started_run(settings: Settings) -> Iterator[tuple[Run, Source]]:
    """A run started outside any flow, on public.customers with the default features, and its
    source; failed and closed afterwards."""
    features = list(DEFAULT_FEATURES)
    run_, _ = Run.start(settings, flow_run_id=None, source_table="public.customers", features=features, params={})
    try:
        yield run_, run_.resolve_source("public.customers", "customer_id", features)
    finally:
        run_.fail("the test is over")
        run_.close()


def test_a_range_written_twice_leaves_its_customers_once(conn):
    """Two writes of one range at once, as when a task runs again while its first run is still
    going (PrefectHQ/prefect #15442): the second waits for the first to commit, then replaces
    its rows; a third, later, replaces them again. The marks go when the table is keyed."""
    generate_customers(conn, 6_000, seed=75)
    with started_run(Settings.from_env()) as (run_, source):
        smallest, largest = run_.id_bounds(source)
        part = (0, (smallest, smallest + 3_000))

        def write(label: int, pause: float) -> None:
            class Slow(Scaler):  # every customer to the one centroid, each chunk taking `pause`
                def transform(self, X: np.ndarray) -> np.ndarray:
                    time.sleep(pause)
                    return np.zeros((len(X), 1))

            centroids = Centroids(np.zeros((1, 1)), Slow(np.zeros(1), np.ones(1)), np.array([label]), source.plan)
            range_pass.score_range(run_.run_id, ranges.snapshot, source, part, 500, centroids, server=ranges.server)

        with run_.assignments_by_range((smallest, largest + 1), None) as ranges:
            first = threading.Thread(target=write, args=(1, 0.2))  # 6 chunks: 1.2 s
            first.start()
            time.sleep(0.3)
            write(2, 0)  # waits for the first, then replaces its rows
            assert not first.is_alive()
            first.join()
            table = f"segmentation.customer_segments_run_{run_.run_id}"
            assert conn.execute(
                f"SELECT segment_id, count(*), count(DISTINCT customer_id) FROM {table} GROUP BY 1"
            ).fetchall() == [(2, 3_000, 3_000)]
            write(3, 0)
            assert conn.execute(f"SELECT segment_id, count(*) FROM {table} GROUP BY 1").fetchall() == [(3, 3_000)]
            marks = "SELECT range_number FROM segmentation.written_ranges WHERE run_id = %s"
            assert conn.execute(marks, (run_.run_id,)).fetchall() == [(0,)]
        assert conn.execute(marks, (run_.run_id,)).fetchall() == []
        assert largest == smallest + 5_999


def test_a_failed_range_fails_the_pass_while_an_earlier_range_is_still_running(
    conn, database_url, dask_cluster, monkeypatch
):
    """The pass gives its results in order, but does not wait for the earlier ranges to learn
    that a later one failed: range 0 is held up (see HoldUp) for as long as the pass takes, and
    range 1 fails at once, in a snapshot that does not exist."""
    generate_customers(conn, 6_000, seed=76)
    monkeypatch.setenv("SEGMENTATION_DASK_ADDRESS", dask_cluster.address)
    monkeypatch.setenv("SEGMENTATION_DASK_SESSIONS", "2")
    settings = Settings.from_env()
    cluster = run_cluster.Cluster(settings)
    with started_run(settings) as (run_, source), contextlib.closing(cluster):
        smallest, largest = run_.id_bounds(source)  # the run's snapshot now holds the source
        common = {"source": source, "server": run_.server, "chunk_rows": 1_000, "size": 100, "seed": 0, "below": None}
        parameters = [
            {**common, "snapshot": run_.export_snapshot(), "ids": (smallest, smallest + 3_000)},
            {**common, "snapshot": "00000003-0000BAD0-1", "ids": (smallest + 3_000, largest + 1)},
        ]
        outcome: list = []

        def run_pass() -> None:
            try:
                outcome.append(list(cluster.map(extract_range, parameters)))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                outcome.append(exc)

        hold_up = HoldUp(conn, database_url, "extract")
        try:
            thread = threading.Thread(target=run_pass)
            thread.start()
            thread.join(60)
            assert not thread.is_alive(), "the pass waited for the range held up"
            # Range 0 cannot have ended: it waits for this test's lock (unless cancelled first).
            assert isinstance(outcome[0], Exception) and "snapshot" in str(outcome[0]), outcome
        finally:
            hold_up.release(conn)
