import hashlib
import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from segmentation import bi_definitions, db, migrations
from segmentation.errors import SegmentationError
from support.bi_reader import BI_VIEWS
from support.processes import wait_for
from support.schema import bi_catalog, sql_copy

BI_FILES = [d.filename for d in bi_definitions.discover(migrations.SQL_DIR / "bi")]


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
    assert sorted(results) == [0, 0, 0, len(migrations.discover()) + len(BI_FILES)]


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
    with pytest.raises(SegmentationError, match="changed after it was applied"):
        migrations.pending(conn, tmp_path)


def test_a_new_migration_file_is_applied_in_order(conn, tmp_path):
    for m in migrations.discover():
        (tmp_path / m.path.name).write_text(m.text)
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE segmentation.extra (x int);")
    applied = migrations.upgrade(conn, tmp_path)
    assert [m.filename for m in applied] == ["900_extra.sql"]  # no sql/bi/ there: no BI file either
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
    assert [m.filename for m in migrations.upgrade(conn)] == [
        m.filename for m in migrations.discover() if m.version >= 7
    ] + BI_FILES
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


def bi_checksums(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT name, checksum FROM segmentation.bi_definitions"))


def test_pending_lists_what_an_upgrade_would_apply_and_applies_nothing(conn, tmp_path):
    assert migrations.pending(conn) == []
    assert bi_checksums(conn) == {d.name: d.checksum for d in bi_definitions.discover(migrations.SQL_DIR / "bi")}
    directory = sql_copy(tmp_path)
    edited = directory / "bi" / "current_segments.sql"
    edited.write_text(edited.read_text() + "\n-- edited\n")
    conn.execute("DROP VIEW segmentation_bi.customer_segment_spells")  # by hand: its file brings it back
    recorded = bi_checksums(conn)
    assert migrations.pending(conn, directory) == ["bi/customer_segment_spells.sql", "bi/current_segments.sql"]
    assert bi_checksums(conn) == recorded
    assert conn.execute("SELECT to_regclass('segmentation_bi.customer_segment_spells')").fetchone() == (None,)
    assert [d.filename for d in migrations.upgrade(conn, directory)] == [
        "bi/customer_segment_spells.sql",
        "bi/current_segments.sql",
    ]
    assert bi_checksums(conn)["current_segments"] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert migrations.pending(conn, directory) == []

    # A new numbered migration: every BI file is applied again after it (it may have dropped any).
    (directory / "900_extra.sql").write_text("CREATE TABLE segmentation.extra (x int);")
    assert migrations.pending(conn, directory) == ["900_extra.sql", *BI_FILES]
    assert conn.execute("SELECT to_regclass('segmentation.extra')").fetchone() == (None,)


def test_pending_on_an_empty_database_lists_everything_and_creates_nothing(conn):
    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    assert migrations.pending(conn) == [m.filename for m in migrations.discover()] + BI_FILES
    assert conn.execute("SELECT to_regnamespace('segmentation')").fetchone() == (None,)


def test_a_changed_bi_file_replaces_its_view_in_place(conn, tmp_path):
    directory = sql_copy(tmp_path)
    path = directory / "bi" / "current_segments.sql"
    text = path.read_text().replace("s.n_outliers\n", "s.n_outliers, 100 * s.share AS share_percent\n", 1)
    path.write_text(
        text + "COMMENT ON COLUMN segmentation_bi.current_segments.share_percent IS 'Share, in percent.';\n"
    )
    oid = conn.execute("SELECT 'segmentation_bi.current_segments'::regclass::oid").fetchone()[0]
    before = bi_catalog(conn)
    assert [d.filename for d in migrations.upgrade(conn, directory)] == ["bi/current_segments.sql"]
    after = bi_catalog(conn)
    assert after["views"]["current_segments"]["columns"] == [
        *before["views"]["current_segments"]["columns"],
        ("share_percent", "double precision", "Share, in percent."),
    ]
    assert conn.execute("SELECT 'segmentation_bi.current_segments'::regclass::oid").fetchone()[0] == oid
    assert {k: v for k, v in after["views"].items() if k != "current_segments"} == {
        k: v for k, v in before["views"].items() if k != "current_segments"
    }
    assert migrations.upgrade(conn, directory) == []


def without_inertia(directory):
    """sql/bi/current_run.sql without the column inertia: a change CREATE OR REPLACE refuses."""
    path = directory / "bi" / "current_run.sql"
    lines = path.read_text().replace("inertia, silhouette", "silhouette", 1).splitlines(keepends=True)
    path.write_text("".join(line for line in lines if "current_run.inertia IS" not in line))
    return directory


@pytest.mark.parametrize("login", ["writer", "superuser"])
def test_a_bi_file_that_cannot_replace_its_view_drops_and_creates_it_and_its_dependents(
    conn, database_url, logins, tmp_path, login
):
    """A writer login may not apply the roles file, and what a superuser creates is the
    superuser's: either way the objects created again keep their owner and the reader's grants."""
    directory = without_inertia(sql_copy(tmp_path))
    before = bi_catalog(conn)
    with db.connect(logins.get(login, database_url)) as upgrading:
        applied = migrations.upgrade(upgrading, directory)
    assert [d.filename for d in applied] == [
        "bi/current_run.sql",
        "bi/current_customer_segments.sql",
        "bi/current_feature_drift.sql",
        "bi/current_segment_centroids.sql",
        "bi/current_segment_changes.sql",
        "bi/current_segment_profiles.sql",
        "bi/current_segment_transitions.sql",
        "bi/current_segments.sql",
    ]
    after = bi_catalog(conn)
    assert [c for c in before["views"]["current_run"]["columns"] if c[0] != "inertia"] == after["views"]["current_run"][
        "columns"
    ]
    assert "inertia" not in after["views"]["current_run"]["definition"]
    before["views"]["current_run"] = after["views"]["current_run"]
    assert after == before  # the dependents as they were: definitions, comments, owners, grants
    # The owner's own privileges depend on the server's version (PostgreSQL 17 adds MAINTAIN, m).
    writer_grant = next(g for g in after["views"]["current_segments"]["grants"] if g.startswith("segmentation_writer="))
    assert writer_grant in (
        "segmentation_writer=arwdDxt/segmentation_writer",
        "segmentation_writer=arwdDxtm/segmentation_writer",
    )
    assert after["views"]["current_segments"]["grants"] == ["segmentation_reader=r/segmentation_writer", writer_grant]
    assert after["functions"]["predict(customer jsonb)"]["grants"] == [
        "segmentation_reader=X/segmentation_writer",
        "segmentation_writer=X/segmentation_writer",
    ]
    with psycopg.connect(logins["reader"], autocommit=True) as reader:
        for view in BI_VIEWS:
            assert reader.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("segmentation_bi", view)))
        assert reader.execute("SELECT * FROM segmentation_bi.predict('{}')").fetchall() == [
            (None, None, None, None, None, None)
        ]
    assert migrations.pending(conn, directory) == []


def test_a_function_whose_signature_cannot_be_replaced_is_dropped_and_created(conn, tmp_path):
    directory = sql_copy(tmp_path)
    path = directory / "bi" / "predict.sql"
    text = path.read_text()
    for old, new in [  # predict(customer jsonb)'s only, as route_predict() writes it
        ("segmentation_bi.predict(customer jsonb) '", "segmentation_bi.predict(person jsonb) '"),
        ("predict_current(customer, %L)", "predict_current(person, %L)"),
        ("%I(customer) WHERE (SELECT", "%I(person) WHERE (SELECT"),
    ]:
        assert text.count(old) == 1
        text = text.replace(old, new)
    path.write_text(text)
    before = bi_catalog(conn)["functions"]
    # segment_of, which calls it, is dropped with it and comes back from its own file.
    assert [d.filename for d in migrations.upgrade(conn, directory)] == ["bi/predict.sql", "bi/segment_of.sql"]
    after = bi_catalog(conn)["functions"]
    assert after.keys() == {
        "predict(person jsonb)",
        "predict(customer jsonb, run_id bigint)",
        "predict(customer jsonb, segmentation text)",
        "segment_of(customer jsonb)",
        "segment_of(customer jsonb, run_id bigint)",
        "segment_of(customer jsonb, segmentation text)",
    }
    assert after["segment_of(customer jsonb)"] == before["segment_of(customer jsonb)"]
    assert after["predict(person jsonb)"]["comment"] == before["predict(customer jsonb)"]["comment"]
    assert conn.execute("SELECT * FROM segmentation_bi.predict('{}')").fetchall() == [
        (None, None, None, None, None, None)
    ]


def test_what_depends_on_a_bi_view_outside_sql_bi_stops_its_drop_with_one_clear_line(conn, tmp_path):
    conn.execute("CREATE VIEW public.my_report AS SELECT run_id, inertia FROM segmentation_bi.current_run")
    before = bi_catalog(conn)
    recorded = bi_checksums(conn)
    with pytest.raises(SegmentationError) as raised:
        migrations.upgrade(conn, without_inertia(sql_copy(tmp_path)))
    assert str(raised.value) == (
        "bi/current_run.sql changes segmentation_bi.current_run in a way that needs it dropped and created, and "
        "something outside sql/bi/ depends on it (view my_report depends on view segmentation_bi.current_run); "
        "drop that first, then upgrade again"
    )
    assert bi_catalog(conn) == before and bi_checksums(conn) == recorded


def test_bi_objects_a_migration_drops_come_back_from_their_files_with_their_grants(conn, logins, tmp_path):
    directory = sql_copy(tmp_path)
    (directory / "900_drops.sql").write_text("DROP VIEW segmentation_bi.current_run CASCADE;")
    before = bi_catalog(conn)
    with db.connect(logins["writer"]) as writer:
        applied = migrations.upgrade(writer, directory)
    assert [m.filename for m in applied] == ["900_drops.sql", *BI_FILES]
    assert bi_catalog(conn) == before


def test_db_upgrade_creates_no_source_table_and_the_demo_commands_do(conn, monkeypatch, capsys, tmp_path):
    from segmentation.cli import main

    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    conn.execute("DROP TABLE public.customers")
    assert main(["db", "upgrade"]) == 0
    assert conn.execute("SELECT to_regclass('public.customers')").fetchone()[0] is None
    # generate (and demo, load-csv) make the demo table, readable by the writer; another table is not made.
    assert main(["generate", "--rows", "10", "--table", "public.nothere"]) == 1
    assert conn.execute("SELECT to_regclass('public.nothere')").fetchone()[0] is None
    assert main(["generate", "--rows", "10"]) == 0
    assert conn.execute("SELECT count(*) FROM public.customers").fetchone()[0] == 10
    assert conn.execute("SELECT has_table_privilege('segmentation_writer', 'public.customers', 'SELECT')").fetchone()[0]
    conn.execute("DROP TABLE public.customers")
    csv = tmp_path / "c.csv"
    csv.write_text("CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)\n1,Female,30,50,60\n")
    assert main(["load-csv", str(csv)]) == 0
    assert conn.execute("SELECT count(*) FROM public.customers").fetchone()[0] == 1


def test_a_database_that_applied_the_earlier_001_is_current(conn):
    """001 created public.customers until it was rewritten: its earlier checksum counts as applied."""
    [earlier] = migrations.SUPERSEDED[1]
    conn.execute("UPDATE segmentation.schema_migrations SET checksum = %s WHERE version = 1", (earlier,))
    assert migrations.pending(conn) == []
    assert migrations.upgrade(conn) == []
    conn.execute("UPDATE segmentation.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(SegmentationError, match="001_source_customers.sql changed after it was applied"):
        migrations.upgrade(conn)


def _key(conn, table: str) -> str:
    return conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        (table,),
    ).fetchone()[0]


def test_runs_kept_before_021_are_keyed_by_customer_then_run(conn, tmp_path):
    """021 rebuilds the key of every run's table, attached or not (a run scoring while it runs),
    keeping the rows; the table not attached then attaches with its key, with no second index."""
    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    conn.execute("DROP TABLE public.customers")
    migrations.upgrade(conn, sql_copy(tmp_path, below=21))
    conn.execute(
        "INSERT INTO segmentation.runs (run_id, source_table, features) VALUES (5, 'x', '{age}'), (6, 'x', '{age}')"
    )
    for run_id, attach in ((5, True), (6, False)):
        table = f"segmentation.customer_segments_run_{run_id}"
        conn.execute(f"CREATE TABLE {table} (LIKE segmentation.customer_segments)")
        conn.execute(f"INSERT INTO {table} SELECT {run_id}, g, g % 3, g / 10.0, 0.1 FROM generate_series(1, 1000) g")
        conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (run_id, customer_id)")
        if attach:
            conn.execute(
                f"ALTER TABLE segmentation.customer_segments ATTACH PARTITION {table} FOR VALUES IN ({run_id})"
            )
    assert _key(conn, "segmentation.customer_segments") == "PRIMARY KEY (run_id, customer_id)"

    assert [m.version for m in migrations.upgrade(conn) if isinstance(m, migrations.Migration)] == [21]
    for table in ("customer_segments", "customer_segments_run_5", "customer_segments_run_6"):
        assert _key(conn, f"segmentation.{table}") == "PRIMARY KEY (customer_id, run_id)"
    conn.execute(
        "ALTER TABLE segmentation.customer_segments ATTACH PARTITION segmentation.customer_segments_run_6 FOR VALUES IN (6)"
    )
    indexes = conn.execute(
        """SELECT c.relname, count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
           WHERE c.relname IN ('customer_segments_run_5', 'customer_segments_run_6') GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert indexes == [("customer_segments_run_5", 1), ("customer_segments_run_6", 1)]
    assert conn.execute(
        "SELECT run_id, count(*), sum(customer_id)::bigint, sum(segment_id) FROM segmentation.customer_segments GROUP BY 1 ORDER BY 1"
    ).fetchall() == [(5, 1000, 500500, 1000), (6, 1000, 500500, 1000)]
    # The key finds a customer's rows in every run.
    plan = "\n".join(
        r[0] for r in conn.execute("EXPLAIN SELECT * FROM segmentation.customer_segments WHERE customer_id = 7")
    )
    assert plan.count("customer_segments_run_5_pkey") == 1 and plan.count("customer_segments_run_6_pkey") == 1, plan
