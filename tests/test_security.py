"""Secrets stay secret; the reader and writer roles can do what they need and nothing else."""

import uuid

import psycopg
import pytest
from psycopg import sql

from segmentation import dburl
from segmentation.cli import main
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from support.bi_reader import BI_VIEWS
from support.docs import documented_sql

PASSWORD = "TopSecret-Pw-913"
FAST = {"n_clusters": 3, "n_init": 1}


def with_password(url: str) -> str:
    # The test servers trust local connections, so the password is carried but not needed.
    return dburl.replace(url, password=PASSWORD)


def test_the_database_password_never_leaks(conn, database_url, monkeypatch, capsys, caplog, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    generate_customers(conn, 1000, seed=41)
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", with_password(database_url))
    states = [
        customer_segmentation(**FAST, return_state=True),
        customer_segmentation(**FAST, source_table="public.nope", return_state=True),
    ]
    assert states[0].is_completed() and states[1].is_failed()
    assert main(["run", "--k", "3", "--n-init", "1"]) == 0
    assert main(["show"]) == 0
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x")
    unreachable = customer_segmentation(**FAST, return_state=True)
    assert unreachable.is_failed() and "postgres:***@127.0.0.1:1/x" in unreachable.message
    assert main(["show"]) == 1

    ids = [s.state_details.flow_run_id for s in [*states, unreachable]]
    seen = [capsys.readouterr(), caplog.text] + [s.message or "" for s in [*states, unreachable]]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
        runs = [client.read_flow_run(i) for i in ids]
    assert len(logs) > 20 and len(artifacts) >= 3
    seen += [log.message for log in logs]
    seen += [f"{a.data} {a.description}" for a in artifacts]
    seen += [f"{r.parameters} {r.state.message}" for r in runs]
    seen += [row[0] for row in conn.execute("SELECT r::text FROM segmentation.runs r")]
    assert PASSWORD not in repr(seen)
    assert any("segmentation.runs" in repr(s) or "published" in repr(s) for s in seen)  # we did read real output


def test_database_url_from_a_prefect_secret_block(conn, database_url, monkeypatch, prefect_harness):
    from prefect.blocks.system import Secret

    generate_customers(conn, 500, seed=42)
    name = f"segmentation-db-{uuid.uuid4().hex[:8]}"
    Secret(value=with_password(database_url)).save(name)
    monkeypatch.delenv("SEGMENTATION_DATABASE_URL")
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL_SECRET", name)
    state = customer_segmentation(**FAST, return_state=True)
    assert state.is_completed(), state.message
    assert conn.execute("SELECT n_customers FROM segmentation_bi.current_run").fetchone()[0] == 500
    assert PASSWORD not in repr(state.result())
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL_SECRET", "no-such-block")
    state = customer_segmentation(**FAST, return_state=True)
    assert state.is_failed()
    assert state.message.startswith("SEGMENTATION_DATABASE_URL_SECRET='no-such-block' names no Prefect Secret block")


def test_the_whole_flow_runs_as_the_writer(conn, logins, monkeypatch, prefect_harness):
    generate_customers(conn, 2000, seed=43)
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", logins["writer"])
    for _ in range(2):  # the second run also detaches and matches against the first
        state = customer_segmentation(**FAST, return_state=True)
        assert state.is_completed(), state.message
    owners = conn.execute(
        """SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'segmentation.customer_segments'::regclass"""
    ).fetchall()
    assert owners == [("segmentation_writer",)]
    # A writer may not create roles: db upgrade says which file a DBA runs instead.
    out = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: out.append(" ".join(map(str, a))))
    assert main(["db", "upgrade"]) == 0
    assert any(
        "ask a DBA to run: psql -f" in line and line.endswith("sql/roles/segmentation_roles.sql") for line in out
    )


def test_a_superusers_run_leaves_nothing_a_writer_cannot_drop(conn, logins, monkeypatch, prefect_harness):
    """The first run as a superuser login (the tests' own), the next ones as a writer login:
    retention under the writer drops the superuser's run's table and scoring function."""
    generate_customers(conn, 2000, seed=45)
    monkeypatch.setenv("SEGMENTATION_KEEP_PUBLISHED_RUNS", "1")
    first = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    owners = conn.execute(
        """SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = to_regclass(%s)
           UNION ALL
           SELECT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.oid = to_regprocedure(%s)""",
        (f"segmentation.customer_segments_run_{first}", f"segmentation.predict_run_{first}(jsonb)"),
    ).fetchall()
    assert owners == [("segmentation_writer",), ("segmentation_writer",)]
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", logins["writer"])
    for _ in range(3):
        state = customer_segmentation(**FAST, return_state=True)
        assert state.is_completed(), state.message
    gone = conn.execute(
        "SELECT to_regclass(%s) IS NULL, to_regprocedure(%s) IS NULL",
        (f"segmentation.customer_segments_run_{first}", f"segmentation.predict_run_{first}(jsonb)"),
    ).fetchone()
    assert gone == (True, True)
    assert conn.execute(
        "SELECT assignments_pruned_at IS NOT NULL FROM segmentation.runs WHERE run_id = %s", (first,)
    ).fetchone() == (True,)


def test_the_reader_sees_the_views_and_nothing_else(conn, logins, monkeypatch, prefect_harness):
    generate_customers(conn, 1000, seed=44)
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", logins["writer"])
    assert customer_segmentation(**FAST, return_state=True).is_completed()
    with psycopg.connect(logins["reader"], autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 1000
        assert reader.execute("SELECT count(*) FROM segmentation_bi.current_segments").fetchone()[0] == 3
        assert reader.execute("SELECT count(*) FROM segmentation_bi.current_segment_centroids").fetchone()[0] == 9
        assert reader.execute("SELECT n_customers FROM segmentation_bi.current_run").fetchone()[0] == 1000
        assert reader.execute("SELECT count(*) FROM segmentation_bi.customer_segment_history").fetchone()[0] == 1000
        assert reader.execute("SELECT count(*) FROM segmentation_bi.customer_segment_spells").fetchone()[0] == 1000
        # Scoring in SQL, with the current run and with a run named by id.
        run_id = reader.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone()[0]
        customer = '{"age": 30, "annual_income": 60, "spending_score": 50}'
        scored = reader.execute("SELECT * FROM segmentation_bi.predict(%s::jsonb)", (customer,)).fetchone()
        assert scored[0] == run_id and scored[1] is not None
        assert (
            reader.execute("SELECT * FROM segmentation_bi.predict(%s::jsonb, %s)", (customer, run_id)).fetchone()
            == scored
        )
        # The same under the name SQL-parsing BI tools leave alone.
        for call in ("segment_of(%s::jsonb)", "segment_of(%s::jsonb, 'default')"):
            assert reader.execute(f"SELECT * FROM segmentation_bi.{call}", (customer,)).fetchone() == scored
        denied = [
            "SELECT * FROM segmentation.run_models",
            "SELECT * FROM segmentation.model_centers",
            "SELECT * FROM public.customers",
            "SELECT * FROM segmentation.customer_segments",
            "SELECT * FROM segmentation.quarantine",
            "SELECT * FROM segmentation.segment_spells",
            "SELECT * FROM segmentation.segmentations",
            "INSERT INTO segmentation.runs (source_table, features) VALUES ('x', '{a}')",
            "UPDATE segmentation.segments SET n_customers = 0",
            "DELETE FROM segmentation.segment_centroids",
            "UPDATE public.customers SET age = 1",
            "CREATE TABLE segmentation.mine (x int)",
            "CREATE TABLE public.mine (x int)",
            "CREATE TABLE segmentation_bi.mine (x int)",
            "SELECT segmentation.route_predict()",
            "DROP VIEW segmentation_bi.current_segments",
            "ALTER VIEW segmentation_bi.current_run RENAME TO x",
            "TRUNCATE segmentation.runs",
        ]
        for statement in denied:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)


def test_a_bi_tool_lists_only_what_the_reader_can_chart(conn, logins, monkeypatch, prefect_harness):
    """What Superset, Metabase and Tableau read through SQLAlchemy's inspector as the reader: the
    one schema it may use, only views in it, each one selectable, each view and column described,
    and the snapshot views dated. And the CRM export of docs/bi.md, as written there, for a login
    that may also read the source table."""
    from sqlalchemy import create_engine, inspect, text

    generate_customers(conn, 1000, seed=46)
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", logins["writer"])
    assert customer_segmentation(**FAST, return_state=True).is_completed()
    run_id, published_at = conn.execute(
        "SELECT run_id, published_at FROM segmentation.runs WHERE status = 'published'"
    ).fetchone()
    # A role in no group: what every login may use anyway (PUBLIC's grants, such as on public).
    plain = f"seg_plain_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(plain)))
    try:
        usable = conn.execute(
            """SELECT nspname FROM pg_namespace
               WHERE has_schema_privilege('segmentation_reader', oid, 'USAGE')
                 AND NOT has_schema_privilege(%s, oid, 'USAGE')""",
            (plain,),
        ).fetchall()
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(plain)))
    assert usable == [("segmentation_bi",)]

    engine = create_engine(logins["reader"].replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        inspector = inspect(engine)
        assert inspector.get_table_names("segmentation_bi") == []
        assert set(inspector.get_view_names("segmentation_bi")) == BI_VIEWS
        undescribed = []
        with engine.connect() as bi:
            for view in sorted(BI_VIEWS):
                if not (inspector.get_table_comment(view, "segmentation_bi")["text"] or "").strip():
                    undescribed.append(view)
                undescribed += [
                    f"{view}.{c['name']}"
                    for c in inspector.get_columns(view, "segmentation_bi")
                    if not (c.get("comment") or "").strip()
                ]
                rows = bi.execute(text(f"SELECT * FROM segmentation_bi.{view}")).mappings().all()
                assert rows, view
                if view.startswith("current_"):
                    assert {r["run_id"] for r in rows} == {run_id}
                    assert {r["published_at"] for r in rows} == {published_at}, view
            with pytest.raises(Exception, match="permission denied for schema segmentation"):
                bi.execute(text("SELECT * FROM segmentation.runs"))
        assert undescribed == []
    finally:
        engine.dispose()

    # The CRM export joins the segments to the source's personal data: a login in the reader
    # role that is also granted SELECT on the source table, not a BI tool's reader login.
    crm = dburl.parse(logins["reader"])["user"]
    crm_export = documented_sql("bi.md", "The CRM export")
    expected = conn.execute(crm_export).fetchall()
    assert 0 < len(expected) < 1000
    with (
        psycopg.connect(logins["reader"], autocommit=True) as reader,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table customers"),
    ):
        reader.execute(crm_export)
    conn.execute(sql.SQL("GRANT SELECT ON public.customers TO {}").format(sql.Identifier(crm)))
    with psycopg.connect(logins["reader"], autocommit=True) as reader:
        assert reader.execute(crm_export).fetchall() == expected
