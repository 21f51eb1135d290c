"""Scoring in SQL: segmentation.predict gives every valid customer of a run the run's own
segment id and distance, for the current run and for any run by id, with and without gender
as a feature; invalid input gives a row with NULL segment, not an error."""

from __future__ import annotations

import psycopg
import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from support.data import keep_assignments

pytestmark = pytest.mark.usefixtures("prefect_harness")


def published(**params) -> int:
    state = customer_segmentation(n_init=2, **params, return_state=True)
    assert state.is_completed(), state.message
    return state.result()["run_id"]


def disagreements(conn, run_id: int, rows: str, call: str) -> tuple:
    """(customers of the run scored, with another segment, largest distance difference,
    scored by another run, with another margin (to the bit), with another outlier flag); rows:
    the run's full rows (support.data.keep_assignments)."""
    return conn.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE p.segment_id IS DISTINCT FROM cs.segment_id),
                   max(abs(p.distance - cs.distance)), count(*) FILTER (WHERE p.run_id IS DISTINCT FROM %s),
                   count(*) FILTER (WHERE p.margin IS DISTINCT FROM cs.margin OR cs.margin IS NULL),
                   count(*) FILTER (WHERE p.outlier IS DISTINCT FROM cs.outlier OR cs.outlier IS NULL)
            FROM customers c
            JOIN {rows} cs ON cs.customer_id = c.customer_id
            CROSS JOIN LATERAL {call} AS p""",
        (run_id,),
    ).fetchone()


def test_predict_agrees_with_the_run_on_every_customer(conn):
    generate_customers(conn, 100_000, seed=51)
    conn.execute("UPDATE customers SET gender = ' female ' WHERE customer_id % 7 = 0 AND gender = 'Female'")
    conn.execute("UPDATE customers SET gender = 'MALE' WHERE customer_id % 11 = 0 AND gender = 'Male'")
    conn.execute("UPDATE customers SET annual_income = annual_income + 0.125 WHERE customer_id % 3 = 0")
    conn.execute("UPDATE customers SET age = NULL WHERE customer_id % 997 = 0")  # quarantined by the runs
    plain = published(n_clusters=5)
    plain_rows = keep_assignments(conn, plain)
    with_gender = published(n_clusters=6, features=["gender", "age", "annual_income", "spending_score"])
    with_gender_rows = keep_assignments(conn, with_gender)
    valid = conn.execute("SELECT count(*) FROM customers WHERE age IS NOT NULL").fetchone()[0]
    assert disagreements(conn, with_gender, with_gender_rows, "segmentation_bi.predict(to_jsonb(c))") == (
        valid,
        0,
        pytest.approx(0, abs=1e-9),
        0,
        0,
        0,
    )
    assert disagreements(conn, plain, plain_rows, f"segmentation_bi.predict(to_jsonb(c), {plain})") == (
        valid,
        0,
        pytest.approx(0, abs=1e-9),
        0,
        0,
        0,
    )
    # segment_of, the name SQL-parsing BI tools leave alone, is predict in all three forms.
    for form in ("segment_of(to_jsonb(c))", f"segment_of(to_jsonb(c), {plain})", "segment_of(to_jsonb(c), 'default')"):
        expected = with_gender if form == "segment_of(to_jsonb(c))" or "'default'" in form else plain
        rows = with_gender_rows if expected == with_gender else plain_rows
        assert disagreements(conn, expected, rows, f"segmentation_bi.{form}") == (
            valid,
            0,
            pytest.approx(0, abs=1e-9),
            0,
            0,
            0,
        ), form
    # A customer the run quarantined (NULL age) is scored as one row with NULL segment.
    assert conn.execute(
        "SELECT p.run_id, p.segment_id, p.segment_name, p.distance, p.margin, p.outlier FROM customers c "
        "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c)) p WHERE c.customer_id = 997"
    ).fetchone() == (with_gender, None, None, None, None, None)
    names = dict(
        conn.execute("SELECT segment_id, segment_name FROM segmentation.segments WHERE run_id = %s", (with_gender,))
    )
    name, segment = conn.execute(
        "SELECT p.segment_name, p.segment_id FROM customers c CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c)) p "
        "WHERE c.customer_id = 1"
    ).fetchone()
    assert name == names[segment]


@pytest.mark.parametrize(
    "customer",
    [
        '{"age": 30, "annual_income": 60}',  # a feature missing
        '{"age": 30, "annual_income": null, "spending_score": 50}',
        '{"age": 121, "annual_income": 60, "spending_score": 50}',  # outside the contract's range
        '{"age": 30, "annual_income": 1e400, "spending_score": 50}',  # beyond any float8
        '{"age": 30, "annual_income": -1, "spending_score": 50}',
        '{"age": "30", "annual_income": 60, "spending_score": 50}',  # text, not a number
        "{}",
    ],
)
def test_invalid_input_gives_a_row_with_null_segment(conn, customer):
    generate_customers(conn, 500, seed=52)
    run_id = published(n_clusters=3)
    assert conn.execute("SELECT * FROM segmentation_bi.predict(%s::jsonb)", (customer,)).fetchall() == [
        (run_id, None, None, None, None, None)
    ]
    assert conn.execute("SELECT * FROM segmentation_bi.predict(%s::jsonb, %s)", (customer, run_id)).fetchall() == [
        (run_id, None, None, None, None, None)
    ]


def test_predict_follows_the_current_run_and_refuses_an_unknown_one(conn):
    assert conn.execute("SELECT * FROM segmentation_bi.predict('{}'::jsonb)").fetchall() == [
        (None, None, None, None, None, None)
    ]
    generate_customers(conn, 1000, seed=53)
    first = published(n_clusters=3)
    second = published(n_clusters=4)
    customer = '{"age": 30, "annual_income": 60, "spending_score": 50}'
    assert conn.execute("SELECT run_id FROM segmentation_bi.predict(%s::jsonb)", (customer,)).fetchone() == (second,)
    from segmentation.rollback import make_current

    make_current(conn, run_id=first, reason="test")
    assert conn.execute("SELECT run_id FROM segmentation_bi.predict(%s::jsonb)", (customer,)).fetchone() == (first,)
    with pytest.raises(psycopg.errors.NoDataFound, match="run 999 has no model kept"):
        conn.execute("SELECT * FROM segmentation_bi.predict(%s::jsonb, 999)", (customer,))
    function = conn.execute(
        "SELECT p.provolatile, p.proparallel FROM pg_proc p WHERE p.oid = 'segmentation_bi.predict(jsonb)'::regprocedure"
    ).fetchone()
    assert function == ("s", "s")  # STABLE PARALLEL SAFE


def test_a_tie_goes_to_the_lowest_label_as_in_the_flow(conn):
    import numpy as np

    from segmentation.core.model import assign, assign_with_margin
    from segmentation.store import scoring

    conn.execute(
        "INSERT INTO segmentation.runs (run_id, source_table, features, status, finished_at) VALUES (7, 'x', '{age}', 'staged', now())"
    )
    model = scoring.Model(
        ("age",), np.array([40.0]), np.array([10.0]), np.array([[1.0], [-1.0]]), np.array([12, 11]), ["b", "a"]
    )
    with conn.transaction():
        scoring.save(conn, 7, model)
    labels, _ = assign(model.centers, np.array([[0.0]]))  # age 40: halfway between the two centres
    row = conn.execute("SELECT segment_id FROM segmentation.predict_run_7('{\"age\": 40}'::jsonb)").fetchone()
    assert row == (int(model.segment_ids[labels[0]]),) == (12,)
    # On the border: margin 0, as in the flow; a model without outlier distances flags none.
    margins = assign_with_margin(model.centers, np.array([[0.0]]))[2]
    row = conn.execute("SELECT margin, outlier FROM segmentation.predict_run_7('{\"age\": 40}'::jsonb)").fetchone()
    assert row == (margins[0], None) == (0.0, None)


def _plan_nodes(conn, call: str) -> int:
    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) SELECT count(p.segment_id) FROM customers c "
        f"CROSS JOIN (SELECT max(run_id) AS run_id FROM segmentation.run_models) AS k CROSS JOIN LATERAL {call} AS p"
    ).fetchone()[0]

    def count(node: dict) -> int:
        return 1 + sum(count(child) for child in node.get("Plans", []))

    return count(plan[0]["Plan"])


def test_a_scan_plans_the_current_run_only_and_an_older_snapshot_scores_as_its_views_show(conn, database_url):
    """predict(customer) and predict(customer, segmentation) plan the current run's model alone,
    however many are kept (every kept model's branch in the plan is what a JIT-compiled scan of a
    table pays for, once per kept run), and still score with the run the query's own snapshot
    shows current, also in a transaction that began before a switch."""
    from segmentation.rollback import make_current

    generate_customers(conn, 1000, seed=59)
    first = published(n_clusters=3)
    second = published(n_clusters=4)
    calls = ["segmentation_bi.predict(to_jsonb(c))", "segmentation_bi.predict(to_jsonb(c), 'default')"]
    nodes = [_plan_nodes(conn, call) for call in calls]
    third = published(n_clusters=5)
    assert [_plan_nodes(conn, call) for call in calls] == nodes
    # predict(customer, run_id) with a run id known only as the query runs keeps every branch.
    by_run = "segmentation_bi.predict(to_jsonb(c), k.run_id)"
    assert _plan_nodes(conn, by_run) > nodes[0] + 10

    customer = '{"age": 30, "annual_income": 60, "spending_score": 50}'
    with psycopg.connect(database_url, autocommit=True) as older:
        older.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        older.autocommit = False
        assert older.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone() == (third,)
        make_current(conn, run_id=first, reason="test")
        # The switch rewrote predict for the run now current, which this snapshot does not see.
        for call in ("segmentation_bi.predict(%s::jsonb)", "segmentation_bi.predict(%s::jsonb, 'default')"):
            assert older.execute(f"SELECT run_id FROM {call}", (customer,)).fetchone() == (third,)
            assert conn.execute(f"SELECT run_id FROM {call}", (customer,)).fetchone() == (first,)
        older.rollback()
        assert older.execute("SELECT run_id FROM segmentation_bi.predict(%s::jsonb)", (customer,)).fetchone() == (
            first,
        )
    assert second not in (first, third)
