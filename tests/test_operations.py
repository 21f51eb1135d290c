"""The application layer under the command line (segmentation.operations): its functions
return values when called from Python; the commands that only read never change the schema
(on an empty or older database they say, in one line, to run `segmentation db upgrade`); and a
database URL that cannot be used stops `run` before any flow run starts."""

from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from segmentation import bi_definitions, dburl, migrations, operations
from segmentation.cli import main
from segmentation.errors import SegmentationError
from segmentation.flows.segmentation import FLOW_NAME, customer_segmentation
from segmentation.outcome import Outcome
from segmentation.purge import Purge
from segmentation.rollback import Switch
from segmentation.settings import DATABASE_URL_ENV
from support.databases import with_database
from support.processes import BIN

FAST = {"n_clusters": 3, "n_init": 1}
UPGRADE = "segmentation db upgrade"
PORTS_LINE = (
    "error: SEGMENTATION_DATABASE_URL lists 3 hosts but 2 ports ({}); give one port for every host, or one "
    "port for them all"
)


def segmentation(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, in a process of its own."""
    return subprocess.run(
        [str(BIN / "segmentation"), *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def empty_database_url(server_url, monkeypatch):
    """A database without anything of the project's (not cloned from the migrated template)."""
    name = f"seg_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def catalog(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The database's own schemas, and every relation in them."""
    with psycopg.connect(url, autocommit=True) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' "
                "ORDER BY 1"
            )
        ]
        relations = conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1, 2"""
        ).fetchall()
    return schemas, relations


def flow_run_ids() -> set:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
    return {r.id for r in found}


@pytest.mark.parametrize("command", [["show"], ["runs"]])
def test_a_read_on_an_empty_database_says_to_upgrade_and_creates_nothing(empty_database_url, command):
    assert catalog(empty_database_url) == (["public"], [])
    done = segmentation(*command)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: this database has no segmentation schema yet; create it with: {UPGRADE}\n"
    assert catalog(empty_database_url) == (["public"], [])


@pytest.mark.parametrize(
    "command",
    [
        ["rollback", "--reason", "x"],
        ["promote", "1", "--reason", "x"],
        ["purge", "--customer-id", "1"],
    ],
)
def test_the_other_reads_and_switches_change_no_schema_either(empty_database_url, capsys, command):
    assert main(command) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: this database has no segmentation schema yet; create it with: {UPGRADE}\n")
    assert catalog(empty_database_url) == (["public"], [])


def test_a_database_one_migration_behind_is_refused_until_upgraded(empty_database_url, tmp_path):
    *older, newest = migrations.discover()
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for migration in older:
        (sql_dir / migration.filename).write_bytes(migration.path.read_bytes())
    with psycopg.connect(empty_database_url) as conn:
        assert [m.version for m in migrations.upgrade(conn, sql_dir)] == [m.version for m in older]
    before = catalog(empty_database_url)
    refused = (
        f"error: this database's segmentation schema is older than this version of segmentation "
        # After a numbered migration every BI definition is applied again too.
        f"({newest.filename} and {len(bi_definitions.discover(migrations.SQL_DIR / 'bi'))} more not applied); upgrade it with: {UPGRADE}\n"
    )
    for command in (["show"], ["runs"]):
        done = segmentation(*command)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", refused)
    assert catalog(empty_database_url) == before
    with psycopg.connect(empty_database_url) as conn:
        recorded = [v for (v,) in conn.execute("SELECT version FROM segmentation.schema_migrations ORDER BY 1")]
    assert recorded == [m.version for m in older]

    upgraded = segmentation("db", "upgrade")
    assert upgraded.returncode == 0 and f"applied {newest.filename}" in upgraded.stdout.splitlines()
    done = segmentation("show")
    assert (done.returncode, done.stdout) == (1, "no published run yet; start one with: segmentation run\n")


def test_require_current_names_every_missing_migration_in_one_line(empty_database_url):
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA segmentation")
        conn.execute(
            "CREATE TABLE segmentation.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        with pytest.raises(SegmentationError) as refused:
            migrations.require_current(conn)
    first, *rest = migrations.discover()
    more = len(rest) + len(bi_definitions.discover(migrations.SQL_DIR / "bi"))
    assert str(refused.value) == (
        f"this database's segmentation schema is older than this version of segmentation ({first.filename} and "
        f"{more} more not applied); upgrade it with: {UPGRADE}"
    )


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("form", ["url", "keywords"])
def test_a_multi_host_url_runs_on_the_host_that_answers(database_url, conn, monkeypatch, capsys, form):
    """libpq's high-availability form: the first host is down (nothing listens on port 1), the
    second is the tests' own server; with target_session_attrs=read-write libpq skips the first
    and the run publishes on the second. The URL is shown with its password masked."""
    host, port = dburl.hosts(dburl.parse(database_url))[0]
    multi = dburl.replace(
        database_url, host=f"127.0.0.1,{host}", port=f"1,{port}", target_session_attrs="read-write", password="pw-913"
    )
    if form == "keywords":
        multi = dburl.render(dburl.parse(multi), as_url=False, mask=False)
    assert dburl.parse(multi)["host"].startswith("127.0.0.1,")
    monkeypatch.setenv(DATABASE_URL_ENV, multi)
    assert main(["generate", "--rows", "900", "--seed", "3"]) == 0
    assert main(["run", "--k", "3", "--n-init", "1"]) == 0
    out, err = capsys.readouterr()
    assert any(line.startswith("run 1 published ") for line in out.splitlines()), out
    assert "pw-913" not in out + err
    assert conn.execute("SELECT status, n_customers FROM segmentation.runs").fetchall() == [("published", 900)]
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchall() == [(1,)]
    assert main(["runs"]) == 0
    shown = dburl.redact(multi)
    assert "pw-913" not in shown and "***" in shown and "127.0.0.1" in shown


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    "variable, value, line",
    [
        (
            DATABASE_URL_ENV,
            "postgresql://u:pw@/db?host=h1,h2,h3&port=5432,5433",
            PORTS_LINE.format("postgresql://u:***@/db?host=h1,h2,h3&port=5432,5433"),
        ),
        (
            DATABASE_URL_ENV,
            "host=h1,h2,h3 port=5432,5433 dbname=db user=u password=pw",
            PORTS_LINE.format("user=u password=*** dbname=db host=h1,h2,h3 port=5432,5433"),
        ),
        (
            "SEGMENTATION_CONNECT_ATTEMPTS",
            "a few",
            "error: SEGMENTATION_CONNECT_ATTEMPTS='a few' is not a positive whole number; unset it or fix it",
        ),
    ],
)
@pytest.mark.parametrize("command", [["run"], ["demo"], ["show"], ["runs"]])
def test_a_bad_setting_is_one_line_naming_it(database_url, monkeypatch, capsys, variable, value, line, command):
    monkeypatch.setenv(variable, value)
    before = flow_run_ids()
    assert main(command) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", line + "\n")
    assert flow_run_ids() == before


@pytest.mark.usefixtures("prefect_harness")
def test_promoting_the_first_run_names_no_run_before_it(database_url, conn):
    assert main(["generate", "--rows", "800", "--seed", "5"]) == 0
    state = customer_segmentation(**FAST, publish=False, return_state=True)
    staged = operations.run_outcome(state.state_details.flow_run_id)
    assert staged is not None and staged.status == "staged"
    done = segmentation("promote", str(staged.run_id), "--reason", "reviewed")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"run {staged.run_id} is current: promote"
    assert any(line.startswith("current since ") and line.endswith(", by promote: reviewed") for line in lines)
    assert "None" not in done.stdout


@pytest.mark.usefixtures("prefect_harness")
def test_the_operations_return_what_they_found_or_did(database_url, conn):
    generated = operations.generate(1500, seed=7)
    assert generated.applied == () and generated.report is not None
    assert (generated.report.table, generated.report.loaded) == ("public.customers", 1500)
    assert operations.generate(10, if_empty=True).report is None
    assert conn.execute("SELECT count(*) FROM customers").fetchone() == (1500,)

    def run(**params) -> Outcome:
        state = customer_segmentation(**FAST, **params, return_state=True)
        outcome = operations.run_outcome(state.state_details.flow_run_id)
        row = conn.execute(
            "SELECT run_id, status, error, n_customers FROM segmentation.runs WHERE flow_run_id = %s",
            (state.state_details.flow_run_id,),
        ).fetchone()
        assert outcome is not None
        assert (outcome.run_id, outcome.status, outcome.message, outcome.figures["n_customers"]) == row
        return outcome

    first = run(publish=False)
    assert first.status == "staged" and first.message is None
    assert operations.show() is None  # nothing published yet
    assert operations.promote(first.run_id, "reviewed") == Switch(first.run_id, None, "promote")
    second = run()
    assert second.status == "published"
    assert operations.rollback("second was wrong") == Switch(first.run_id, second.run_id, "rollback")
    failed = run(source_table="public.nosuch")
    assert failed.status == "failed" and "public.nosuch does not exist" in (failed.message or "")
    assert operations.run_outcome(uuid.uuid4()) is None

    listed = operations.list_runs(10)
    assert [(r["run_id"], r["status"], r["is_current"]) for r in listed] == [
        (failed.run_id, "failed", False),
        (second.run_id, "published", False),
        (first.run_id, "published", True),
    ]
    assert [r["run_id"] for r in operations.list_runs(1)] == [failed.run_id]

    shown = operations.show()
    assert shown is not None
    assert (shown.run["run_id"], shown.run["n_customers"], len(shown.segments)) == (first.run_id, 1500, 3)
    assert shown.sample.shape == (0, 3)  # no picture asked for, no customers sampled
    pictured = operations.show(second.run_id, plot=True)
    assert pictured is not None and pictured.run["status"] == "published" and len(pictured.sample) == 1500
    with pytest.raises(SegmentationError, match="there is no run 999999"):
        operations.show(999999)

    assignments, spells = conn.execute(
        """SELECT (SELECT count(*) FROM segmentation.customer_segments WHERE customer_id IN (1, 2)),
                  (SELECT count(*) FROM segmentation.segment_spells WHERE customer_id IN (1, 2))"""
    ).fetchone()
    assert assignments > 0
    purged = operations.purge([2, 1, 2])
    recorded = conn.execute(
        "SELECT purge_id, customers, assignment_rows, spell_rows, quarantine_rows, change_rows FROM segmentation.purges"
    ).fetchall()
    assert [purged] == [Purge(*row) for row in recorded]
    assert (purged.customers, purged.assignment_rows, purged.spell_rows, purged.quarantine_rows) == (
        2,
        assignments,
        spells,
        0,
    )

    upgraded = operations.upgrade_database()
    assert upgraded == operations.Upgrade((), True)  # the tests' login is a superuser
