"""High availability: every session of a run is on the run's server, and a failover during a run
fails that run with one line, publishes nothing half-done on the new primary, and the next run
publishes there with no manual step (docs/operations.md#high-availability).

The failover test starts a primary and a synchronous streaming standby of its own (initdb,
pg_basebackup), as the postgres OS user when the tests run as root, in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from segmentation import db, migrations
from segmentation.cli import main
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.loading import create_demo_table, generate_customers
from segmentation.settings import DATABASE_URL_ENV, Settings
from segmentation.store import range_pass
from segmentation.store.run import Run
from support.processes import BIN, free_port, wait_for

PG_BIN = Path(os.environ.get("SEGMENTATION_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
ELSEWHERE = "system 1, up since 2000-01-01 00:00:00.000000 UTC"  # no server's identity


@contextlib.contextmanager
def started_run() -> Iterator[Run]:
    run, _ = Run.start(
        Settings.from_env(),
        flow_run_id=None,
        source_table="public.customers",
        features=list(DEFAULT_FEATURES),
        params={},
    )
    try:
        yield run
    finally:
        run.fail("the test is over")
        run.close()


def sessions(conn: psycopg.Connection, name: str) -> int:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()[0]


def test_every_session_of_a_run_is_on_the_run_server(conn, database_url):
    """The identity of a server (its system identifier and start time) is the same from every
    session; a session that finds another identity is closed at once and fails the run in one
    line, whether it is a second reader of the snapshot or a range on a Dask worker."""
    generate_customers(conn, 3_000, seed=81)
    with started_run() as run:
        assert run.server == db.server_identity(conn)
        system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        assert run.server.startswith(f"system {system}, up since ")
        with db.connect_snapshot(database_url, application_name="seg-same", server=run.server) as same:
            # Checked in autocommit: the snapshot has not begun yet.
            assert same.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert db.server_identity(same) == run.server
        with pytest.raises(db.ServerChanged) as raised:
            db.connect_snapshot(database_url, application_name="seg-elsewhere", server=ELSEWHERE)
        line = str(raised.value)
        assert "\n" not in line
        assert line.startswith("a session of the run reached another PostgreSQL server (at ")
        assert f": {run.server}) than the run's ({ELSEWHERE}): a failover or restart during the run" in line
        wait_for(lambda: sessions(conn, "seg-elsewhere") == 0, what="the session on the wrong server to be closed")
        source = run.resolve_source("public.customers", "customer_id", list(DEFAULT_FEATURES))
        smallest, largest = run.id_bounds(source)
        snapshot = run.export_snapshot()
        rows = range_pass.read_range(snapshot, source, (smallest, largest + 1), 1_000, server=run.server)
        assert sum(len(chunk.ids) for chunk in rows) == 3_000
        with pytest.raises(db.ServerChanged):
            list(range_pass.read_range(snapshot, source, (smallest, largest + 1), 1_000, server=ELSEWHERE))


# The failover.


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg(tool: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [*_as_postgres(), str(PG_BIN / tool), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@dataclass
class Server:
    data: Path
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        _pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.data.parent / f"{self.port}.log"))

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            _pg("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))


@dataclass
class Pair:
    primary: Server
    standby: Server

    def url(self, dbname: str) -> str:
        """Both servers, primary first; libpq connects to the one that accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/{dbname}"
            "?target_session_attrs=read-write&connect_timeout=5"
        )


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A primary and a synchronous streaming standby, in a temporary directory owned by the
    postgres OS user when the tests run as root (PostgreSQL refuses to run as root)."""
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.fail(f"PostgreSQL's server binaries are not in {PG_BIN}; set SEGMENTATION_TEST_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="segmentation-failover-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    primary = Server(root / "primary", free_port())
    standby = Server(root / "standby", free_port())
    try:
        _pg("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        settings = {
            "port": primary.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "wal_level": "replica",
            "max_wal_senders": 4,
            "synchronous_commit": "on",
            "fsync": "off",  # a test server: its data need not survive the machine
            "shared_buffers": "'64MB'",
            "max_connections": 40,
        }
        with open(primary.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        primary.start()
        _pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(standby.data), "-R"
        )
        with open(standby.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {standby.port}\ncluster_name = 'standby'\n")
        standby.start()
        with psycopg.connect(primary.url(), autocommit=True) as admin:
            # Set after the base backup, so the standby, once promoted, waits for no standby.
            admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
            admin.execute("SELECT pg_reload_conf()")
            wait_for(
                lambda: admin.execute(
                    "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby' AND sync_state = 'sync'"
                ).fetchone(),
                timeout=30,
                what="the standby to stream synchronously",
            )
        yield Pair(primary, standby)
    finally:
        for server in (primary, standby):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


CUSTOMERS = 200_000
RUN = ["run", "--k", "3", "--n-init", "1"]


def test_a_failover_during_a_run_fails_it_and_the_next_run_publishes_on_the_new_primary(
    pair, prefect_harness, monkeypatch, capsys
):
    with psycopg.connect(pair.primary.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE crm")
    with psycopg.connect(pair.primary.url("crm"), autocommit=True) as primary:
        migrations.upgrade(primary)
        create_demo_table(primary)
        generate_customers(primary, CUSTOMERS, seed=23)
    url = pair.url("crm")
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    monkeypatch.setenv("SEGMENTATION_CONNECT_ATTEMPTS", "6")  # 1+2+4+8+16 s: the promotion takes less
    assert main(RUN) == 0
    assert any(line.startswith("run 1 published ") for line in capsys.readouterr().out.splitlines())

    # Run 2, as the nightly job runs it, in a process of its own; the primary stops while the
    # run writes its assignments, and the standby is promoted.
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "SEGMENTATION_CHUNK_ROWS": "10000"}
    flow = subprocess.Popen(
        [str(BIN / "segmentation"), *RUN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with psycopg.connect(pair.primary.url("crm"), autocommit=True) as watch:
            wait_for(
                lambda: (
                    watch.execute(
                        """SELECT 1 FROM pg_stat_activity
                       WHERE query LIKE 'COPY %customer_segments_run_2%' AND state = 'active'"""
                    ).fetchone()
                    or flow.poll() is not None
                ),
                timeout=120,
                interval=0.005,
                what="run 2 to write its assignments",
            )
        assert flow.poll() is None, "run 2 ended before the failover"
        pair.primary.stop("immediate")
        stopped = time.monotonic()
        _pg("pg_ctl", "promote", "-w", "-t", "60", "-D", str(pair.standby.data))
        out, err = flow.communicate(timeout=180)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.communicate()
    print(f"failover: the run ended {time.monotonic() - stopped:.1f} s after the primary stopped")
    print(f"segmentation run printed:\n{out}{err}")
    assert flow.returncode == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: the run did not publish: lost the connection to PostgreSQL ("), errors
    # The command's own last word; above it, Prefect's log of the task that failed.
    assert err.splitlines()[-1] == errors[0]
    assert errors[0].endswith("; the previous published run stays current")

    # The new primary: run 2 failed there (the database's own answer), nothing of it visible,
    # run 1 still current and whole.
    with psycopg.connect(pair.standby.url("crm"), autocommit=True) as new_primary:
        assert new_primary.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert new_primary.execute("SELECT run_id, status FROM segmentation.runs ORDER BY run_id").fetchall() == [
            (1, "published"),
            (2, "failed"),
        ]
        assert new_primary.execute("SELECT run_id FROM segmentation_bi.current_run").fetchall() == [(1,)]
        assert new_primary.execute("SELECT to_regclass('segmentation.customer_segments_run_2')").fetchone() == (None,)
        assert new_primary.execute(
            "SELECT run_id, count(*) FROM segmentation_bi.current_customer_segments GROUP BY 1"
        ).fetchall() == [(1, CUSTOMERS)]
        assert new_primary.execute(
            "SELECT run_id, count(*) FROM segmentation_bi.customer_segment_history GROUP BY 1"
        ).fetchall() == [(1, CUSTOMERS)]

    # The next run publishes on the new primary, through the same URL, with no manual step.
    capsys.readouterr()
    assert main(RUN) == 0
    with psycopg.connect(pair.standby.url("crm"), autocommit=True) as new_primary:
        runs = new_primary.execute("SELECT run_id, status FROM segmentation.runs ORDER BY run_id").fetchall()
        # Its id skips some: a promoted standby's sequences resume past the values the primary
        # had logged ahead (PostgreSQL logs a sequence 32 values at a time).
        assert runs[:2] == [(1, "published"), (2, "failed")]
        [(third, status)] = runs[2:]
        assert (third > 2, status) == (True, "published")
        assert any(line.startswith(f"run {third} published ") for line in capsys.readouterr().out.splitlines())
        assert new_primary.execute("SELECT run_id FROM segmentation_bi.current_run").fetchall() == [(third,)]
        # Nothing published before is lost: run 1's assignments, and its time as the current run.
        assert new_primary.execute(
            "SELECT run_id, count(*) FROM segmentation_bi.customer_segment_history GROUP BY 1 ORDER BY 1"
        ).fetchall() == [(1, CUSTOMERS), (third, CUSTOMERS)]
        assert new_primary.execute(
            "SELECT run_id, action, n_customers FROM segmentation_bi.run_history ORDER BY current_from"
        ).fetchall() == [(1, "publish", CUSTOMERS), (third, "publish", CUSTOMERS)]
