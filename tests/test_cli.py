"""The segmentation command, called in-process as a user would type it (and once in a process
of its own, where Prefect's temporary API server is started)."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from segmentation import dburl
from segmentation.cli import main


@pytest.fixture
def cli(capsys):
    def call(*argv):
        try:
            code = main(list(argv))
        except SystemExit as stopped:  # argparse after --help
            code = stopped.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_load_csv_then_show_before_any_run(cli, database_url, mall_csv):
    code, out, _ = cli("load-csv", str(mall_csv))
    assert code == 0 and "loaded 200 customers into public.customers (200 new, 0 updated)" in out
    code, out, _ = cli("show")
    assert code == 1 and "no published run yet" in out


def test_load_csv_strict_failure_is_one_clear_message(cli, database_url, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("CustomerID,Genre,Age,Annual Income (k$),Spending Score (1-100)\n1,Male,abc,15,39\n")
    code, out, err = cli("load-csv", str(path))
    assert code == 1
    assert err.startswith("error: ") and "line 2: age 'abc' is not a whole number" in err
    assert "Traceback" not in err + out
    code, out, _ = cli("load-csv", str(path), "--skip-invalid")
    assert code == 0 and "loaded 0 customers" in out and "line 2: age 'abc'" in out


@pytest.mark.usefixtures("prefect_harness")
def test_run_prints_the_published_segments_and_show_repeats_them(cli, database_url, mall_csv):
    cli("load-csv", str(mall_csv))
    code, out, _ = cli("run", "--k", "5", "--features", "annual_income,spending_score")
    assert code == 0
    assert "200 customers in 5 segments from public.customers" in out
    lines = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    share_at = [next(i for i, t in enumerate(r) if t.endswith("%")) for r in lines]
    table = {(float(r[-2]), float(r[-1])): (int(r[i - 1]), " ".join(r[1 : i - 1])) for r, i in zip(lines, share_at)}
    assert table == {
        (55.3, 49.5): (81, "Average income · Average spending"),
        (86.5, 82.1): (39, "High income · High spending"),
        (25.7, 79.4): (22, "Low income · High spending"),
        (88.2, 17.1): (35, "High income · Low spending"),
        (26.3, 20.9): (23, "Low income · Low spending"),
    }
    code, shown, _ = cli("show")
    assert code == 0 and shown.splitlines()[1:] == out.splitlines()[1:]


@pytest.mark.usefixtures("prefect_harness")
def test_run_that_does_not_publish_exits_non_zero_with_the_reason(cli, database_url):
    cli("generate", "--rows", "50")
    code, _out, err = cli("run", "--source-table", "public.customerz")
    assert code == 1
    assert "error: the run did not publish: source table public.customerz does not exist" in err


def test_a_bad_setting_stops_run_before_any_flow_run_in_one_line(cli, database_url, conn, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_CHUNK_ROWS", "lots")
    code, out, err = cli("run")
    assert code == 1 and out == ""
    assert err == "error: SEGMENTATION_CHUNK_ROWS='lots' is not a positive whole number; unset it or fix it\n"
    assert conn.execute("SELECT count(*) FROM segmentation.runs").fetchone() == (0,)  # no run began


@pytest.mark.usefixtures("prefect_harness")
def test_demo_fills_an_empty_table_and_prints_segments(cli, database_url, conn):
    code, out, _ = cli("demo", "--rows", "1500")
    assert code == 0
    assert "generated 1500 demo customers" in out
    assert "1500 customers in" in out and "spending_score" in out
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 1500
    code, out, _ = cli("demo")
    assert code == 0 and "already has customers" in out


def test_demo_on_an_empty_database_applies_the_roles_grants(cli, server_url, monkeypatch):
    """A database the demo makes from nothing is readable by segmentation_reader, as after
    `db upgrade`: the command that applies the migrations applies the roles' grants too."""
    name = f"seg_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        monkeypatch.setenv("SEGMENTATION_DATABASE_URL", dburl.replace(server_url, dbname=name))
        code, out, _ = cli("demo", "--rows", "600")
        assert code == 0, out
        with psycopg.connect(dburl.replace(server_url, dbname=name), autocommit=True) as conn:
            assert conn.execute(
                """SELECT has_table_privilege('segmentation_reader', 'segmentation_bi.current_customer_segments', 'SELECT'),
                          has_schema_privilege('segmentation_reader', 'segmentation', 'USAGE'),
                          (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'segmentation')"""
            ).fetchone() == (True, False, "segmentation_writer")
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_generate_and_db_upgrade(cli, database_url, conn):
    code, out, _ = cli("db", "upgrade")
    assert code == 0 and "up to date" in out
    code, out, _ = cli("generate", "--rows", "250", "--seed", "9")
    assert code == 0 and "generated 250 customers" in out
    assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 250


@pytest.mark.unit
def test_unreachable_database_is_one_clear_message(cli, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", "postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere")
    code, out, err = cli("show")
    assert code == 1
    assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/nowhere" in err
    assert "Check SEGMENTATION_DATABASE_URL" in err
    assert "s3cret-pw" not in out + err


@pytest.mark.unit
def test_non_postgres_url_is_refused(cli, monkeypatch):
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", "sqlite:///x.db")
    code, _, err = cli("show")
    assert code == 1 and "only PostgreSQL is supported" in err


@pytest.mark.unit
@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql://seg:s3cr@tpass@127.0.0.1:5432/db", "percent-encode special characters in the password"),
        ("postgresql://seg:pw@127.0.0.1:5x432/db", "is not a database URL"),
    ],
)
def test_malformed_urls_are_one_line_without_the_password(cli, monkeypatch, url, message):
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", url)
    code, _out, err = cli("show")
    assert code == 1 and message in err and "Traceback" not in err
    assert "tpass" not in err and "pw@" not in err


@pytest.mark.usefixtures("prefect_harness")
def test_run_offers_every_flow_parameter_with_the_flows_defaults(cli, database_url, conn):
    from segmentation.flows.segmentation import customer_segmentation

    code, help_text, _ = cli("run", "--help")
    assert code == 0
    for name, spec in customer_segmentation.parameters.properties.items():
        assert f"--{name.replace('_', '-')}" in help_text
        assert " ".join(spec["description"].split()[:3]) in " ".join(help_text.split())
    cli("generate", "--rows", "400", "--seed", "3")
    code, _, err = cli("run", "--k", "4", "--min-silhouette", "0.99")
    assert code == 1 and "below the minimum 0.99" in err
    code, out, _ = cli("run", "--n-clusters", "4", "--match-threshold", "0.25", "--no-force-publish", "--n-init", "3")
    assert code == 0 and "400 customers in 4 segments" in out
    params = conn.execute("SELECT params FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone()[0]
    assert (params["n_clusters"], params["match_threshold"], params["force_publish"], params["n_init"]) == (
        4,
        0.25,
        False,
        3,
    )
    assert (params["min_silhouette"], params["k_max"]) == (0.2, 10)  # not given: the flow's own defaults


@pytest.mark.usefixtures("prefect_harness")
def test_the_exit_code_and_the_message_follow_the_database(cli, database_url, conn, monkeypatch):
    """Exit 0 when the run published, whatever broke around it; non-zero when it did not, or
    when that cannot be known, with the way to check."""
    import segmentation.cli
    import segmentation.operations
    from segmentation.errors import SegmentationError
    from segmentation.store.run import Run

    cli("generate", "--rows", "1500")

    # The run published, then its segments could not be read back to print them.
    def lost(*args, **kwargs):
        raise SegmentationError("cannot connect to PostgreSQL at postgresql://x after 3 attempt(s): refused")

    with monkeypatch.context() as patched:
        patched.setattr(segmentation.cli, "_show", lost)
        code, out, _err = cli("run", "--k", "3")
    first = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    assert code == 0
    assert f"run {first} is published, but its segments cannot be shown now (cannot connect" in out
    assert "show them later with: segmentation show" in out

    # The flow run broke after the publish (retention lost its connection): the run is
    # published, and that is what the flow run, its event and the command report.
    def broken(self, keep):
        raise RuntimeError("server closed the connection unexpectedly")

    with monkeypatch.context() as patched:
        patched.setattr(Run, "prune", broken)
        code, out, _err = cli("run", "--k", "3")
    second = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    assert code == 0 and f"run {second} published" in out
    assert conn.execute("SELECT status FROM segmentation.runs WHERE run_id = %s", (second,)).fetchone() == (
        "published",
    )
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone() == (second,)

    # A run that failed, with the database gone when the command asks: unknown, said so.
    with monkeypatch.context() as patched:
        patched.setattr(segmentation.operations, "_connect", lost)
        code, _out, err = cli("run", "--source-table", "public.customerz")
    assert code == 1
    assert "whether it published cannot be known now (cannot connect to PostgreSQL" in err
    assert "Check with: segmentation runs" in err


def test_a_prefect_api_that_does_not_start_is_one_line(database_url, conn, tmp_path):
    """No PREFECT_API_URL, and Prefect's temporary server not up in time (here no time at all;
    seen on a busy machine with Prefect's 20 s): one line naming the settings, and no run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0",
        SEGMENTATION_DATABASE_URL=database_url,
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "segmentation"), "run", "--k", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    # Prefect's own log lines around it (starting and stopping its server) stay.
    assert (
        "error: Prefect's temporary API server did not start within 0 s; set "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to a running Prefect server"
    ) in done.stderr.splitlines()
    assert conn.execute("SELECT count(*) FROM segmentation.runs").fetchone() == (0,)
