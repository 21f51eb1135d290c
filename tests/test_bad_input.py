"""Bad source data and hostile names, through the flow: one clear message or a quarantine
row with a reason, nothing half-published, the previous run still current."""

import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from support.bi_reader import assert_current_run
from support.data import insert_customers

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(**params):
    return customer_segmentation(**params, return_state=True)


@pytest.fixture
def published_baseline(conn):
    generate_customers(conn, 500, seed=11)
    state = run(n_clusters=4)
    assert state.is_completed()
    return state.result()["run_id"]


def assert_still_current(conn, run_id):
    assert_current_run(conn, run_id)
    assert conn.execute("SELECT count(*) FROM segmentation.runs WHERE status = 'running'").fetchone()[0] == 0


def test_absurd_and_non_finite_values_are_quarantined(conn, published_baseline):
    conn.execute("ALTER TABLE customers ALTER COLUMN annual_income TYPE numeric")
    conn.execute("UPDATE customers SET annual_income = 1e400 WHERE customer_id = 1")  # beyond float8
    conn.execute("UPDATE customers SET annual_income = '-Infinity' WHERE customer_id = 2")
    conn.execute("UPDATE customers SET age = -3 WHERE customer_id = 3")
    conn.execute("UPDATE customers SET spending_score = 2000000000 WHERE customer_id = 4")
    state = run(n_clusters=4)
    assert state.is_completed(), state.message
    reasons = dict(
        conn.execute(
            "SELECT customer_id, reason FROM segmentation.quarantine WHERE run_id = %s", (state.result()["run_id"],)
        ).fetchall()
    )
    assert reasons[1].startswith("annual_income 1") and reasons[1].endswith("is absurdly large")
    assert reasons[2] == "annual_income is -Infinity"
    assert reasons[3] == "age -3 is outside 0-120"
    assert reasons[4] == "spending_score 2000000000 is outside 1-100"
    assert state.result()["n_customers"] == 496


def test_duplicated_ids_in_a_table_without_primary_key_are_quarantined(conn):
    conn.execute(
        "CREATE TABLE public.raw_customers (customer_id bigint, gender text, age int, annual_income numeric, spending_score int)"
    )
    insert_customers(
        conn, [(i, "Female", 20 + i % 40, 10 + i, 1 + (i * 7) % 100) for i in range(1, 101)], "public.raw_customers"
    )
    insert_customers(
        conn, [(5, "Male", 30, 50, 50), (5, "Male", 31, 51, 51), (None, "Male", 30, 50, 50)], "public.raw_customers"
    )
    state = run(n_clusters=3, source_table="public.raw_customers")
    assert state.is_completed(), state.message
    rows = conn.execute(
        "SELECT customer_id, reason FROM segmentation.quarantine ORDER BY customer_id NULLS FIRST, record->>'age'"
    ).fetchall()
    assert rows == [(None, "customer_id is NULL")] + [(5, "customer_id 5 appears 3 times in the source")] * 3
    assert state.result()["n_customers"] == 99
    assert (
        conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments WHERE customer_id = 5").fetchone()[
            0
        ]
        == 0
    )


UNUSABLE = [
    ("TRUNCATE customers", {"n_clusters": 4}, "only 0 valid customers for 4 clusters"),
    ("DELETE FROM customers WHERE customer_id > 3", {"n_clusters": 4}, "only 3 valid customers for 4 clusters"),
    (
        "UPDATE customers SET age = 40, annual_income = 60, spending_score = 50",
        {},
        "all 500 valid customers have identical features",
    ),
    ("UPDATE customers SET age = NULL", {"n_clusters": 4}, "only 0 valid customers"),
    (
        "ALTER TABLE customers DROP COLUMN spending_score",
        {"n_clusters": 4},
        "column spending_score does not exist in public.customers",
    ),
    (
        "ALTER TABLE customers ALTER COLUMN age TYPE text",
        {"n_clusters": 4},
        "feature column age of public.customers is text",
    ),
]


def test_unusable_sources_fail_clearly_and_keep_the_previous_run(conn, published_baseline):
    conn.execute("CREATE TABLE saved AS TABLE customers")
    for setup, params, message in UNUSABLE:
        conn.execute(setup)
        state = run(**params)
        assert state.is_failed(), setup
        assert message in state.message and "\n" not in state.message, (setup, state.message)
        assert_still_current(conn, published_baseline)
        assert (
            conn.execute("SELECT status FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone()[0] == "failed"
        )
        conn.execute("DROP TABLE customers")
        conn.execute("CREATE TABLE customers (LIKE saved INCLUDING ALL)")
        conn.execute("ALTER TABLE customers ADD PRIMARY KEY (customer_id)")
        conn.execute("INSERT INTO customers SELECT * FROM saved")


PAYLOADS = [
    "customers; DROP TABLE public.canary",
    'customers"; DROP TABLE public.canary; --',
    '"customers; DROP TABLE public.canary"',
    "customers' OR '1'='1",
    "customers /* DROP TABLE public.canary */",
    "public.customers -- comment",
]


def test_injection_payloads_change_nothing(conn, published_baseline):
    conn.execute("CREATE TABLE public.canary (x int)")
    conn.execute("INSERT INTO public.canary VALUES (42)")
    before = conn.execute("SELECT count(*), sum(age) FROM customers").fetchone()
    # Every payload through the parsing and catalog checks, two of them through whole runs.
    from segmentation.errors import SegmentationError
    from segmentation.source.catalog import resolve_source

    for payload in PAYLOADS:
        for args in (
            (payload, "customer_id", ["age"]),
            ("customers", payload, ["age"]),
            ("customers", "customer_id", ["age", payload]),
        ):
            with pytest.raises(SegmentationError, match="does not exist|is not a valid"):
                resolve_source(conn, *args)
    for payload in PAYLOADS[1:3]:
        for params in ({"source_table": payload}, {"features": ["age", payload]}, {"id_column": payload}):
            state = run(n_clusters=4, **params)
            assert state.is_failed()
            assert "does not exist" in state.message or "is not a valid" in state.message
    assert conn.execute("SELECT x FROM public.canary").fetchall() == [(42,)]
    assert conn.execute("SELECT count(*), sum(age) FROM customers").fetchone() == before
    assert_still_current(conn, published_baseline)


def test_names_with_quotes_and_spaces_work_when_they_really_exist(conn):
    conn.execute('CREATE SCHEMA "odd ""schema"""')
    conn.execute(
        'CREATE TABLE "odd ""schema"""."cust; table" ("id ""x""" bigint PRIMARY KEY, "spend--score" float8, "inc" float8)'
    )
    with conn.cursor().copy('COPY "odd ""schema"""."cust; table" FROM STDIN') as copy:
        for i in range(1, 61):
            copy.write_row((i, float(i % 2 * 50 + i % 5), float(i % 3 * 10)))
    state = run(
        n_clusters=2,
        source_table='"odd ""schema"""."cust; table"',
        id_column='"id ""x"""',
        features=['"spend--score"', "inc"],
    )
    assert state.is_completed(), state.message
    assert state.result()["n_customers"] == 60
    assert (
        conn.execute("SELECT source_table FROM segmentation_bi.current_run").fetchone()[0]
        == '"odd ""schema"""."cust; table"'
    )
