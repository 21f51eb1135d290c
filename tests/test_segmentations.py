"""Several segmentations side by side: two run at once and publish each into its own views, a
rollback of one leaves the other current, predict(customer, segmentation) agrees with the named
run, the command line reads each, and an erasure reaches every one. Real PostgreSQL, real flow
runs in processes of their own."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from segmentation import bi_definitions, migrations
from segmentation.cli import main
from segmentation.errors import SegmentationError
from segmentation.loading import generate_customers
from segmentation.segmentations import MAX_NAME_LENGTH, NAME_PATTERN, VIEWS, check_name, view_name
from support.bi_reader import BI_VIEWS
from support.docs import documented_sql
from support.processes import start_flow_process, wait_for
from support.schema import bi_catalog, sql_copy

ROOT = Path(__file__).resolve().parents[1]
FAST = {"n_clusters": 4, "n_init": 1}
RFM = {"segmentation": "rfm", "source_table": "public.shoppers", "features": ["age", "annual_income"], "n_clusters": 3}
RFM_VIEWS = {view_name("rfm", v) for v in VIEWS}


@pytest.mark.unit
def test_a_segmentation_name_is_checked_in_one_line():
    assert check_name("rfm") == "rfm" and check_name("default") == "default"
    assert check_name("a" * MAX_NAME_LENGTH)
    for bad, says in [
        ("RFM", "is not valid"),
        ("1rfm", "is not valid"),
        ("rfm-2", "is not valid"),
        ("", "is not valid"),
        ("a" * 41, "is not valid"),
        ("a" * (MAX_NAME_LENGTH + 1), "fits PostgreSQL's 63-character names"),
        ("current", "the names of the default segmentation's"),
        ("current_customer", "the names of the default segmentation's"),
    ]:
        with pytest.raises(SegmentationError, match=re.escape(says)) as raised:
            check_name(bad)
        assert "\n" not in str(raised.value)
    # The longest view name of the longest name fits PostgreSQL's identifiers.
    assert max(len(view_name("a" * MAX_NAME_LENGTH, v)) for v in VIEWS) == 63


@pytest.mark.unit
def test_the_name_rule_and_the_history_files_are_each_declared_once():
    # The CHECK of sql/014 is the rule of segmentation/segmentations.py.
    assert f"CHECK (name ~ '^{NAME_PATTERN}$')" in (ROOT / "sql" / "014_segmentations.sql").read_text()
    # The two history views read the spells through the same text.
    texts = [
        (ROOT / "sql" / "bi" / f"{name}.sql").read_text()
        for name in ("customer_segment_history", "customer_segment_spells")
    ]
    ctes = [t[t.index("WITH spell_versions AS (") : t.index("\n)", t.index("WITH spell_versions AS ("))] for t in texts]
    assert ctes[0] == ctes[1]


@pytest.mark.unit
def test_a_named_segmentations_views_are_rendered_from_the_default_files():
    definitions = {d.name: d for d in bi_definitions.discover(migrations.SQL_DIR / "bi")}
    assert {name for name, d in definitions.items() if d.per_segmentation} == set(VIEWS)
    rendered = definitions["current_customer_segments"].render("rfm")
    assert "CREATE OR REPLACE VIEW segmentation_bi.rfm_customer_segments AS" in rendered
    assert "FROM segmentation_bi.rfm_run)" in rendered and "segmentation_bi.current_run" not in rendered
    assert "COMMENT ON COLUMN segmentation_bi.rfm_customer_segments.segment_name IS" in rendered
    spells = definitions["customer_segment_spells"].render("rfm")
    assert "'default'" not in spells and spells.count("'rfm'") == definitions["customer_segment_spells"].text.count(
        "'default'"
    )
    assert definitions["current_run"].render("default") == definitions["current_run"].text


def view_rows(conn, view: str, columns: str = "*") -> list[tuple]:
    return conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(sql.SQL(columns), sql.Identifier("segmentation_bi", view))
    ).fetchall()


def make_shoppers(conn) -> None:
    """The second segmentation's source: 1,500 of the same customers (same ids), another table."""
    conn.execute("CREATE TABLE public.shoppers AS SELECT * FROM public.customers WHERE customer_id <= 1500")
    conn.execute("ALTER TABLE public.shoppers ADD PRIMARY KEY (customer_id)")
    conn.execute("GRANT SELECT ON public.shoppers TO segmentation_writer")


def runs_waiting(conn) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name LIKE 'segmentation-%%' AND wait_event_type = 'Lock'"
    ).fetchone()[0]


def test_two_segmentations_run_at_once_and_are_published_side_by_side(
    conn, database_url, logins, prefect_harness, capsys
):
    generate_customers(conn, 3000, seed=41)
    make_shoppers(conn)
    writer = logins["writer"]  # the flow's least-privilege login creates the new views
    with psycopg.connect(database_url) as blocker:
        # Hold both source tables: both runs are then under way at once, each with its own run
        # lock (a run of the same segmentation would be refused), until the tables are let go.
        blocker.execute("LOCK TABLE public.customers, public.shoppers IN ACCESS EXCLUSIVE MODE")
        processes = [
            start_flow_process(prefect_harness, writer, **FAST),
            start_flow_process(prefect_harness, writer, **{**FAST, **RFM}),
        ]
        try:
            wait_for(lambda: runs_waiting(conn) == 2, timeout=120, what="both runs to reach their source")
            assert dict(
                conn.execute("SELECT segmentation, status FROM segmentation.runs ORDER BY run_id").fetchall()
            ) == {"default": "running", "rfm": "running"}
            blocker.rollback()
            for p in processes:
                p.wait(timeout=120)
        finally:
            for p in processes:
                p.kill()
    assert [p.returncode for p in processes] == [0, 0], [p.stdout.read() + p.stderr.read()[-3000:] for p in processes]
    runs = dict(
        conn.execute("SELECT segmentation, run_id FROM segmentation.runs WHERE status = 'published'").fetchall()
    )
    assert set(runs) == {"default", "rfm"}

    # Each segmentation's views: its own run, its own customers, its own features.
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone()[0] == runs["default"]
    assert conn.execute("SELECT run_id, features, k FROM segmentation_bi.rfm_run").fetchone() == (
        runs["rfm"],
        ["age", "annual_income"],
        3,
    )
    assert conn.execute(
        "SELECT count(*), count(DISTINCT run_id) FROM segmentation_bi.current_customer_segments"
    ).fetchone() == (3000, 1)
    assert conn.execute(
        "SELECT count(*), min(run_id), max(run_id), count(published_at) FROM segmentation_bi.rfm_customer_segments"
    ).fetchone() == (1500, runs["rfm"], runs["rfm"], 1500)
    # Each customer's segment in the named view is the one the run stored.
    assert (
        conn.execute(
            """SELECT count(*) FROM segmentation_bi.rfm_customer_segments v
           JOIN segmentation.customer_segments cs ON cs.run_id = v.run_id AND cs.customer_id = v.customer_id
           WHERE cs.segment_id = v.segment_id"""
        ).fetchone()[0]
        == 1500
    )
    assert conn.execute("SELECT count(*), sum(n_customers) FROM segmentation_bi.rfm_segments").fetchone() == (3, 1500)
    assert conn.execute("SELECT count(*), sum(n_customers) FROM segmentation_bi.current_segments").fetchone() == (
        4,
        3000,
    )
    assert {r[0] for r in conn.execute("SELECT DISTINCT feature FROM segmentation_bi.rfm_segment_centroids")} == {
        "age",
        "annual_income",
    }
    assert conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_history").fetchone()[0] == 1500
    assert conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_spells").fetchone()[0] == 1500
    assert conn.execute("SELECT count(*) FROM segmentation_bi.customer_segment_history").fetchone()[0] == 3000
    assert view_rows(conn, "segmentations", "segmentation, run_id, view_prefix") == [
        ("default", runs["default"], "current_"),
        ("rfm", runs["rfm"], "rfm_"),
    ]

    # The same columns, types and descriptions as the default's views; the writer owns them and
    # the reader may read them.
    def columns(view):
        return conn.execute(
            """SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)
               FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum""",
            (f"segmentation_bi.{view}",),
        ).fetchall()

    for default_view in VIEWS:
        named = view_name("rfm", default_view)
        assert columns(named) == columns(default_view)
        assert conn.execute(
            "SELECT obj_description(%s::regclass, 'pg_class'), pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
            (f"segmentation_bi.{named}", f"segmentation_bi.{named}"),
        ).fetchone() == (
            conn.execute(
                "SELECT obj_description(%s::regclass, 'pg_class')", (f"segmentation_bi.{default_view}",)
            ).fetchone()[0],
            "segmentation_writer",
        )
    with psycopg.connect(logins["reader"], autocommit=True) as reader:
        for view in BI_VIEWS | RFM_VIEWS:
            reader.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("segmentation_bi", view)))
        # predict(customer, 'rfm') with the rfm run, for the reader too.
        assert (
            reader.execute(
                """SELECT run_id FROM segmentation_bi.predict('{"age": 30, "annual_income": 60}', 'rfm')"""
            ).fetchone()[0]
            == runs["rfm"]
        )
    agree = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE p.run_id = v.run_id AND p.segment_id = v.segment_id)
           FROM public.shoppers c
           JOIN segmentation_bi.rfm_customer_segments v ON v.customer_id = c.customer_id
           CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), 'rfm') AS p"""
    ).fetchone()
    assert agree == (1500, 1500)
    default_agree = conn.execute(
        """SELECT count(*) FILTER (WHERE p.run_id = v.run_id AND p.segment_id = v.segment_id)
           FROM public.customers c
           JOIN segmentation_bi.current_customer_segments v ON v.customer_id = c.customer_id
           CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), 'default') AS p"""
    ).fetchone()[0]
    assert default_agree == 3000
    with pytest.raises(psycopg.errors.NoDataFound, match="there is no segmentation 'nosuch'"):
        conn.execute("SELECT * FROM segmentation_bi.predict('{}'::jsonb, 'nosuch')")

    # The query of docs/bi.md: each customer's segment in both.
    assert len(conn.execute(documented_sql("bi.md", "The views")).fetchall()) == 1500

    # The command line, per segmentation.
    capsys.readouterr()
    assert main(["runs", "--segmentation", "rfm"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^\s*{runs['rfm']}\s+published", listed, re.M) and not re.search(
        rf"^\s*{runs['default']}\s", listed, re.M
    )
    assert main(["show", "--segmentation", "rfm"]) == 0
    shown = capsys.readouterr().out
    assert (
        shown.startswith(f"run {runs['rfm']} published")
        and "1500 customers in 3 segments from public.shoppers" in shown
    )
    assert main(["show"]) == 0
    assert capsys.readouterr().out.startswith(f"run {runs['default']} published")
    assert main(["show", "--segmentation", "nosuch"]) == 1
    assert "there is no segmentation nosuch in this database (there are: default, rfm)" in capsys.readouterr().err
    assert main(["show", "--segmentation", "rfm", "--run", str(runs["default"])]) == 1
    assert f"run {runs['default']} is a run of segmentation default, not rfm" in capsys.readouterr().err


def test_a_rollback_of_one_segmentation_leaves_the_other_current_and_purge_reaches_both(
    conn, database_url, prefect_harness, capsys
):
    generate_customers(conn, 2000, seed=42)
    make_shoppers(conn)
    for params in (FAST, {**FAST, **RFM}):
        process = start_flow_process(prefect_harness, database_url, **params)
        assert process.wait(timeout=180) == 0, process.stdout.read() + process.stderr.read()[-3000:]
    conn.execute("DELETE FROM public.shoppers WHERE customer_id > 1200")  # the second rfm run is smaller
    process = start_flow_process(prefect_harness, database_url, **{**FAST, **RFM, "max_customer_drop": 0.5})
    assert process.wait(timeout=180) == 0, process.stdout.read() + process.stderr.read()[-3000:]
    default_run, first_rfm, second_rfm = (
        r[0] for r in conn.execute("SELECT run_id FROM segmentation.runs ORDER BY run_id")
    )
    assert conn.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0] == second_rfm
    assert (
        conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_history").fetchone()[0] == 1500 + 1200
    )

    # A plain rollback of rfm goes to rfm's previous run; the default stays as it is.
    capsys.readouterr()
    assert main(["rollback", "--segmentation", "rfm", "--reason", "test"]) == 0
    assert capsys.readouterr().out.startswith(
        f"run {first_rfm} is current of segmentation rfm (run {second_rfm} was): rollback"
    )
    assert conn.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0] == first_rfm
    assert conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segments").fetchone()[0] == 1500
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone()[0] == default_run
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 2000
    assert (
        conn.execute(
            "SELECT p.run_id FROM public.shoppers c CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), 'rfm') p LIMIT 1"
        ).fetchone()[0]
        == first_rfm
    )
    # The default has no run before its only one; a run named must be of the segmentation named.
    assert main(["rollback", "--reason", "test"]) == 1
    assert f"run {default_run} is the only run that has been current" in capsys.readouterr().err
    assert main(["promote", str(second_rfm), "--segmentation", "default", "--reason", "test"]) == 1
    assert f"run {second_rfm} is a run of segmentation rfm, not default" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["rollback", "--to", str(second_rfm), "--reason", "back"]) == 0
    assert conn.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0] == second_rfm

    # An erasure reaches every segmentation: the views, the histories and the figures.
    assert main(["purge", "--customer-id", "7"]) == 0
    for view in (
        "current_customer_segments",
        "customer_segment_history",
        "customer_segment_spells",
        "rfm_customer_segments",
        "rfm_customer_segment_history",
        "rfm_customer_segment_spells",
    ):
        assert (
            conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE customer_id = 7").format(sql.Identifier("segmentation_bi", view))
            ).fetchone()[0]
            == 0
        ), view
    assert conn.execute("SELECT count(*) FROM segmentation.segment_spells WHERE customer_id = 7").fetchone()[0] == 0
    assert conn.execute("SELECT sum(n_customers) FROM segmentation_bi.rfm_segments").fetchone()[0] == 1199
    assert conn.execute("SELECT sum(n_customers) FROM segmentation_bi.current_segments").fetchone()[0] == 1999
    assert (
        conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_history").fetchone()[0] == 1499 + 1199
    )


def test_an_upgrade_applies_a_changed_bi_file_to_every_segmentation(conn, logins, tmp_path):
    """A change CREATE OR REPLACE refuses (a column removed) drops and creates the default's view
    and every segmentation's copy, with their owner and the reader's grants."""
    assert migrations.add_segmentation(conn, "rfm") is True
    assert migrations.add_segmentation(conn, "rfm") is False  # once
    before = bi_catalog(conn)
    directory = sql_copy(tmp_path)
    path = directory / "bi" / "current_run.sql"
    lines = path.read_text().replace("inertia, silhouette", "silhouette", 1).splitlines(keepends=True)
    path.write_text("".join(line for line in lines if "current_run.inertia IS" not in line))
    assert "bi/current_run.sql" in [d.filename for d in migrations.upgrade(conn, directory)]
    after = bi_catalog(conn)
    for view in ("current_run", "rfm_run"):
        assert "inertia" not in [c[0] for c in after["views"][view]["columns"]]
        assert after["views"][view]["grants"] == before["views"][view]["grants"]
        assert after["views"][view]["owner"] == before["views"][view]["owner"]
    assert after["views"]["rfm_customer_segments"] == before["views"]["rfm_customer_segments"]
    with psycopg.connect(logins["reader"], autocommit=True) as reader:
        assert reader.execute("SELECT count(*) FROM segmentation_bi.rfm_run").fetchone() == (0,)
    assert migrations.pending(conn, directory) == []
    # A name whose views would take another's is refused in one line, before anything is created.
    conn.execute("CREATE VIEW segmentation_bi.taken_run AS SELECT 1 AS x")
    with pytest.raises(SegmentationError, match="segmentation taken's view segmentation_bi.taken_run exists already"):
        migrations.add_segmentation(conn, "taken")
    assert conn.execute("SELECT count(*) FROM segmentation.segmentations WHERE name = 'taken'").fetchone() == (0,)


def test_a_segmentations_staged_and_rejected_runs_are_made_current_in_it_alone(conn, database_url, prefect_harness):
    from segmentation import operations

    generate_customers(conn, 2000, seed=44)
    make_shoppers(conn)
    for params in (FAST, {**FAST, **RFM}, {**FAST, **RFM, "publish": False}, {**FAST, **RFM, "min_silhouette": 0.99}):
        process = start_flow_process(prefect_harness, database_url, **params)
        process.wait(timeout=180)
    default_run, first_rfm, staged, rejected = (
        r for r in conn.execute("SELECT run_id, segmentation, status FROM segmentation.runs ORDER BY run_id")
    )
    assert [r[1:] for r in (default_run, first_rfm, staged, rejected)] == [
        ("default", "published"),
        ("rfm", "published"),
        ("rfm", "staged"),
        ("rfm", "rejected"),
    ]
    switch = operations.promote(staged[0], "reviewed", segmentation="rfm")
    assert (switch.run_id, switch.from_run_id, switch.segmentation) == (staged[0], first_rfm[0], "rfm")
    assert conn.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0] == staged[0]
    # A person approves the rejected one (the approve-run flow's decision): it becomes rfm's current run.
    outcome = operations.decide(rejected[0], "approved", "looks right", None)
    assert (outcome.status, outcome.segmentation) == ("published", "rfm")
    assert conn.execute("SELECT run_id, forced FROM segmentation_bi.rfm_run").fetchone() == (rejected[0], True)
    assert conn.execute(
        "SELECT run_id, from_run_id, action, segmentation FROM segmentation.current_run_log ORDER BY switch_id"
    ).fetchall() == [
        (default_run[0], None, "publish", "default"),
        (first_rfm[0], None, "publish", "rfm"),
        (staged[0], first_rfm[0], "promote", "rfm"),
        (rejected[0], staged[0], "promote", "rfm"),
    ]
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone()[0] == default_run[0]
    assert conn.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_history").fetchone()[0] == 3 * 1500
