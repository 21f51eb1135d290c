import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from segmentation import migrations
from segmentation.errors import SegmentationError
from support.bi_reader import BI_VIEWS
from support.processes import wait_for


def test_upgrade_is_recorded_and_idempotent(conn):
    rows = conn.execute("SELECT version, name FROM segmentation.schema_migrations ORDER BY version").fetchall()
    assert rows == [(m.version, m.name) for m in migrations.discover()]
    assert migrations.upgrade(conn) == []
    views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'segmentation_bi'")}
    assert views == BI_VIEWS


def test_two_processes_upgrading_at_once_apply_each_migration_once(server_url, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
        conn.execute("DROP TABLE public.customers")
    results, errors = [], []

    def upgrade():
        try:
            with psycopg.connect(database_url) as c:
                results.append(len(migrations.upgrade(c)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(migrations.discover())]


def test_a_role_another_database_is_creating_at_that_moment_is_taken_as_created(server_url, database_url, tmp_path):
    """The roles belong to the cluster, while the lock around the roles file is one database's:
    two databases of one cluster upgraded at once may both create a role. The second waits for
    the first to commit, then finds the name taken, and goes on. Names of the test's own, so
    the cluster's roles are not touched."""
    suffix = uuid.uuid4().hex[:8]
    writer, reader = f"seg_test_writer_{suffix}", f"seg_test_reader_{suffix}"
    roles_file = tmp_path / "roles.sql"
    text = migrations.ROLES_SQL.read_text(encoding="utf-8")
    roles_file.write_text(text.replace("segmentation_writer", writer).replace("segmentation_reader", reader))
    outcome: list = []

    def apply_roles() -> None:
        try:
            with psycopg.connect(database_url, application_name="roles-under-test") as c:
                outcome.append(migrations.apply_roles(c, roles_file))
        except psycopg.Error as exc:
            outcome.append(exc)

    try:
        with (
            psycopg.connect(server_url) as other,  # the other database's upgrade, not committed yet
            psycopg.connect(server_url, autocommit=True) as watcher,  # sees pg_stat_activity afresh each time
        ):
            other.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(writer)))
            thread = threading.Thread(target=apply_roles)
            thread.start()
            wait_for(
                lambda: watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'roles-under-test' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()[0],
                30,
                what="the roles file to wait for the other CREATE ROLE",
            )
            other.commit()
        thread.join(30)
        assert outcome == [True]
        with psycopg.connect(database_url) as c:
            owners = c.execute(
                "SELECT DISTINCT pg_get_userbyid(nspowner) FROM pg_namespace "
                "WHERE nspname IN ('segmentation', 'segmentation_bi')"
            ).fetchall()
            assert owners == [(writer,)]
            assert c.execute("SELECT has_table_privilege(%s, 'public.customers', 'SELECT')", (writer,)).fetchone()
            assert c.execute("SELECT has_schema_privilege(%s, 'segmentation_bi', 'USAGE')", (reader,)).fetchone()
    finally:
        with psycopg.connect(database_url, autocommit=True) as c:
            for role in (writer, reader):
                if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    c.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
                    c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_edited_migration_is_refused(conn, tmp_path):
    for m in migrations.discover():
        (tmp_path / m.path.name).write_text(m.text)
    first = sorted(tmp_path.glob("001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(SegmentationError, match="changed after it was applied"):
        migrations.upgrade(conn, tmp_path)


def test_a_new_migration_file_is_applied_in_order(conn, tmp_path):
    for m in migrations.discover():
        (tmp_path / m.path.name).write_text(m.text)
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE segmentation.extra (x int);")
    applied = migrations.upgrade(conn, tmp_path)
    assert [m.version for m in applied] == [900]
    assert conn.execute("SELECT to_regclass('segmentation.extra') IS NOT NULL").fetchone()[0]


def test_the_history_of_runs_from_before_the_spells_is_carried_over(conn, tmp_path):
    """Published runs kept as full rows before 007 become the history, in publish order."""
    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    conn.execute("DROP TABLE public.customers")
    for m in migrations.discover():
        if m.version < 7:
            (tmp_path / m.path.name).write_text(m.text)
    migrations.upgrade(conn, tmp_path)
    rows = {  # run -> customer -> segment
        1: {1: 1, 2: 1, 3: 2},
        2: {1: 1, 2: 2, 4: 2},  # 2 moved, 3 left, 4 arrived
        3: {1: 2, 2: 2, 3: 1, 4: 2},  # 1 moved, 3 came back
        4: {1: 1},  # staged: not in the history
    }
    for run_id, customers in rows.items():
        status = "staged" if run_id == 4 else "published"
        conn.execute(
            "INSERT INTO segmentation.runs (run_id, status, source_table, features, published_at, finished_at) "
            "VALUES (%s, %s, 'public.customers', '{age}', "
            "CASE WHEN %s = 'published' THEN now() + %s * interval '1 s' END, now())",
            (run_id, status, status, run_id),
        )
        conn.execute(f"CREATE TABLE segmentation.customer_segments_run_{run_id} (LIKE segmentation.customer_segments)")
        for customer, segment in customers.items():
            conn.execute(
                f"INSERT INTO segmentation.customer_segments_run_{run_id} VALUES (%s, %s, %s, 0.5)",
                (run_id, customer, segment),
            )
        conn.execute(
            f"ALTER TABLE segmentation.customer_segments ATTACH PARTITION segmentation.customer_segments_run_{run_id} "
            f"FOR VALUES IN ({run_id})"
        )
        for segment in set(customers.values()):
            conn.execute(
                "INSERT INTO segmentation.segments (run_id, segment_id, n_customers, share, segment_name) "
                "VALUES (%s, %s, 1, 1, %s)",
                (run_id, segment, f"segment {segment}"),
            )
    assert [m.version for m in migrations.upgrade(conn)] == [m.version for m in migrations.discover() if m.version >= 7]
    history = set(conn.execute("SELECT customer_id, run_id, segment_id FROM segmentation_bi.customer_segment_history"))
    assert history == {(c, r, s) for r in (1, 2, 3) for c, s in rows[r].items()}
    assert conn.execute("SELECT run_id, history_version FROM segmentation.runs ORDER BY run_id").fetchall() == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, None),
    ]
    spells = conn.execute(
        "SELECT customer_id, segment_id, valid_from_run_id, valid_to_run_id FROM segmentation_bi.customer_segment_spells "
        "ORDER BY customer_id, valid_from_run_id"
    ).fetchall()
    assert spells == [
        (1, 1, 1, 3),
        (1, 2, 3, None),
        (2, 1, 1, 2),
        (2, 2, 2, None),
        (3, 2, 1, 2),
        (3, 1, 3, None),
        (4, 2, 2, None),
    ]
