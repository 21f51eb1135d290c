"""The tests' fixtures and hooks; what they share besides is in tests/support.

Integration tests run against a real PostgreSQL: SEGMENTATION_TEST_DATABASE_URL, or an
embedded server started for the session when it is unset. Each test that needs a database
gets a fresh one, cloned from a migrated template, and dropped afterwards. Unit tests
(`-m unit`, support/tiers.py) start and reach no server."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from segmentation import dburl, migrations
from segmentation.loading import create_demo_table
from segmentation.settings import DATABASE_URL_ENV, TEST_DATABASE_URL_ENV, libpq_url
from support import tiers
from support.data import MALL_CSV
from support.databases import RolesRecord, embedded_server, with_database
from support.prefect_server import running_prefect_server

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("SEGMENTATION_CONNECT_ATTEMPTS", "1")
# A test that loses its database URL must never touch the developer's own embedded database.
DATA_DIR = Path(tempfile.mkdtemp(prefix="segmentation-test-home-"))
os.environ["SEGMENTATION_DATA_DIR"] = str(DATA_DIR)
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)

TEMPLATE = f"seg_template_{uuid.uuid4().hex[:8]}"
ROLES_RECORD = pytest.StashKey[RolesRecord]()
ROLES_RECORD_DIR = "segmentation_roles_record"  # a pytest-xdist workerinput key


def pytest_configure(config):
    """The record of the cluster's roles before the tests: one directory for the whole run,
    made by pytest-xdist's controller (or the only process) and handed to its workers."""
    if hasattr(config, "workerinput"):
        directory = Path(config.workerinput[ROLES_RECORD_DIR])
    else:
        directory = Path(tempfile.mkdtemp(prefix="segmentation-test-roles-"))
    config.stash[ROLES_RECORD] = RolesRecord(directory)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput[ROLES_RECORD_DIR] = str(node.config.stash[ROLES_RECORD].path.parent)


def pytest_unconfigure(config):
    """The roles the tests created are dropped once every worker is done; an embedded server
    goes with its roles."""
    if hasattr(config, "workerinput") or ROLES_RECORD not in config.stash:
        return
    record = config.stash[ROLES_RECORD]
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        record.drop_created(libpq_url(url))
    shutil.rmtree(record.path.parent, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A unit test asking for a server fails here, before any fixture starts one."""
    if item.get_closest_marker("unit") is not None:
        refused = tiers.server_fixtures_refused(item.nodeid, item.fixturenames)
        if refused:
            pytest.fail(refused, pytrace=False)


@pytest.fixture(autouse=True)
def unit_tests_start_no_server(request):
    """A unit test that started a server on its own (a flow called without Prefect's API, a
    command without a database URL) fails: it belongs to the integration tests."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    before = tiers.child_processes()
    yield
    started = tiers.servers_started(before, DATA_DIR)
    assert not started, f"a unit test started {'; '.join(started)}: drop its unit mark"


@pytest.fixture(scope="session")
def server_url(pytestconfig):
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        pytestconfig.stash[ROLES_RECORD].note_before_first_use(libpq_url(url))
        yield libpq_url(url)
        return
    with embedded_server() as url:
        yield url


@pytest.fixture(scope="session")
def template(server_url):
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(with_database(server_url, TEMPLATE)) as conn:
        migrations.upgrade(conn)
        # The demo source table, as `demo`, `generate` and `load-csv` make it (db upgrade does not).
        create_demo_table(conn)
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
    yield {role: dburl.replace(database_url, user=name) for role, name in names.items()}
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


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real Prefect server for the tests that need one (serve, events): one for the session,
    as it takes some 15 s to start."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


@pytest.fixture
def mall_csv() -> Path:
    """The Kaggle Mall Customers file, carried in tests/data (see tests/data/README.md)."""
    return MALL_CSV
