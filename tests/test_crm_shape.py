"""`segmentation generate --shape crm` against a real PostgreSQL: the tables, their keys, the
view customer_rfm, what is refused, and the binary COPY types it writes with."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from segmentation import crm_shape
from segmentation.cli import main
from segmentation.core import synthetic_crm
from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows

RFM_COLUMNS = [
    ("id", "text"),
    ("recency_days", "integer"),
    ("frequency", "integer"),
    ("monetary", "numeric"),
    ("first_order_at", "timestamp with time zone"),
    ("last_order_at", "timestamp with time zone"),
    ("plan", "text"),
    ("country", "text"),
    ("signup_date", "date"),
    ("gender", "text"),
]
TABLE_COLUMNS = {
    "customers": [
        ("id", "text"),
        ("email", "text"),
        ("plan", "text"),
        ("country", "text"),
        ("signup_date", "date"),
        ("gender", "text"),
        ("marketing_opt_in", "boolean"),
    ],
    "orders": [
        ("order_id", "bigint"),
        ("customer_id", "text"),
        ("ordered_at", "timestamp with time zone"),
        ("amount", "numeric(12,2)"),
    ],
}


def _columns(conn, relation: str) -> list[tuple[str, str]]:
    return conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
           WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
        (relation,),
    ).fetchall()


def _expected(rows: int, seed: int) -> synthetic_crm.CrmData:
    """What the command makes; only its dates depend on as_of."""
    return synthetic_crm.generate(rows, seed, np.datetime64("2026-01-01T00:00:00", "us"))


def test_generate_crm_makes_the_tables_their_keys_and_the_rfm_view(database_url, conn, capsys):
    assert main(["generate", "--shape", "crm", "--rows", "3000", "--seed", "5"]) == 0
    expected = _expected(3000, 5)
    orders = len(expected.orders["customer_id"])
    never = int((expected.frequency == 0).sum())
    out = capsys.readouterr().out
    assert (
        f"generated 3,000 customers ({never:,} without orders) and {orders:,} orders into crm.customers and "
        "crm.orders, with the view crm.customer_rfm, in "
    ) in out
    assert never == 870 and orders > 6000

    for table, columns in TABLE_COLUMNS.items():
        assert _columns(conn, f"crm.{table}") == columns
    assert _columns(conn, "crm.customer_rfm") == RFM_COLUMNS
    keys = conn.execute(
        """SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) FROM pg_constraint
           WHERE connamespace = 'crm'::regnamespace AND contype IN ('p', 'f') ORDER BY 1, 2"""
    ).fetchall()
    assert keys == [
        ("crm.customers", "p", "PRIMARY KEY (id)"),
        ("crm.orders", "f", "FOREIGN KEY (customer_id) REFERENCES crm.customers(id)"),
        ("crm.orders", "p", "PRIMARY KEY (order_id)"),
    ]
    assert (
        conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'crm' AND indexdef LIKE '%(customer_id)'"
        ).fetchone()[0]
        == 1
    )

    # The rows are the generator's, exactly: ids, e-mails, and every amount to the cent.
    ids, emails = zip(*conn.execute("SELECT id, email FROM crm.customers").fetchall())
    assert sorted(ids) == sorted(expected.customers["id"].astype(str).tolist())
    assert sorted(emails) == sorted(expected.customers["email"].astype(str).tolist())
    amounts = [a for (a,) in conn.execute("SELECT amount FROM crm.orders ORDER BY amount")]
    assert amounts == sorted(Decimal(f"{a:.2f}") for a in expected.orders["amount"].tolist())
    # Order ids follow the orders' times.
    assert conn.execute(
        "SELECT bool_and(ordered_at >= lag) FROM (SELECT ordered_at, lag(ordered_at) OVER (ORDER BY order_id) FROM crm.orders) o"
    ).fetchone() == (True,)

    # Recency is NULL exactly for the customers without orders, whose frequency and monetary are 0.
    nulls = conn.execute(
        """SELECT count(*) FILTER (WHERE r.recency_days IS NULL),
                  count(*) FILTER (WHERE r.recency_days IS NULL AND o.customer_id IS NULL
                                   AND r.frequency = 0 AND r.monetary = 0 AND r.last_order_at IS NULL),
                  count(*) FILTER (WHERE o.customer_id IS NULL),
                  count(*), min(r.recency_days)
           FROM crm.customer_rfm r LEFT JOIN (SELECT DISTINCT customer_id FROM crm.orders) o ON o.customer_id = r.id"""
    ).fetchone()
    assert nulls == (never, never, never, 3000, 0)

    # frequency, monetary and the order times agree with a plain aggregate of the orders.
    differing = conn.execute(
        """SELECT count(*) FROM crm.customer_rfm r
           FULL JOIN (SELECT c.id, count(o.order_id) AS frequency, coalesce(sum(o.amount), 0) AS monetary,
                             min(o.ordered_at) AS first_order_at, max(o.ordered_at) AS last_order_at
                      FROM crm.customers c LEFT JOIN crm.orders o ON o.customer_id = c.id GROUP BY c.id) a USING (id)
           WHERE r.id IS NULL OR a.id IS NULL OR r.frequency <> a.frequency OR r.monetary <> a.monetary
              OR r.first_order_at IS DISTINCT FROM a.first_order_at OR r.last_order_at IS DISTINCT FROM a.last_order_at"""
    ).fetchone()[0]
    assert differing == 0
    assert conn.execute("SELECT sum(frequency), sum(monetary) FROM crm.customer_rfm").fetchone() == (
        orders,
        sum(Decimal(f"{a:.2f}") for a in expected.orders["amount"].tolist()),
    )
    assert conn.execute(
        "SELECT count(*) FROM crm.customer_rfm WHERE signup_date > (first_order_at AT TIME ZONE 'UTC')::date"
    ).fetchone() == (0,)


def test_rows_are_the_same_whatever_the_chunks_and_progress_is_reported(conn):
    lines: list[str] = []
    done = crm_shape.generate(conn, 2000, 8, "small_chunks", chunk_rows=300, report=lines.append)
    assert done is not None and (done.schema, done.customers) == ("small_chunks", 2000)
    one_chunk = crm_shape.generate(conn, 2000, 8, "one_chunk")
    assert one_chunk is not None and one_chunk.orders == done.orders
    assert lines[-1] == f"generate: 2,000 customers and {done.orders:,} orders written; adding their keys"
    assert len(lines) > 1 and all(
        line.startswith("generate: ") and " rows of customers and orders (" in line for line in lines[:-1]
    )
    for table, key in (
        ("customers", "id, email, plan, country, signup_date, gender, marketing_opt_in"),
        ("orders", "order_id, customer_id, amount"),
    ):
        differing = conn.execute(
            f"SELECT count(*) FROM (SELECT {key} FROM small_chunks.{table} EXCEPT SELECT {key} FROM one_chunk.{table}) d"
        ).fetchone()[0]
        assert differing == 0, table


def _crm(*arguments: str) -> int:
    return main(["generate", "--shape", "crm", *arguments])


def test_a_schema_with_rows_is_refused_and_if_empty_leaves_it(database_url, conn, capsys):
    assert _crm("--rows", "200", "--schema", "Sales") == 0  # unquoted, as PostgreSQL reads it: sales
    assert "into sales.customers and sales.orders" in capsys.readouterr().out
    assert _crm("--rows", "300", "--schema", "sales") == 1
    assert capsys.readouterr().err == (
        "error: sales.customers already holds rows, and --shape crm only fills a new or empty schema; "
        "choose another with --schema NAME, or pass --if-empty to leave this one as it is\n"
    )
    assert _crm("--rows", "300", "--schema", "sales", "--if-empty") == 0
    assert "the CRM tables in schema sales already hold rows; nothing generated" in capsys.readouterr().out
    assert conn.execute("SELECT count(*) FROM sales.customers").fetchone() == (200,)

    # Its own tables, emptied, are made again; --if-empty fills them too.
    conn.execute("TRUNCATE sales.orders, sales.customers")
    assert _crm("--rows", "300", "--schema", "sales", "--if-empty") == 0
    assert "generated 300 customers" in capsys.readouterr().out
    assert conn.execute("SELECT count(*) FROM sales.customer_rfm").fetchone() == (300,)


def test_a_table_of_the_same_name_it_did_not_make_is_left_alone(database_url, conn, capsys):
    """public.customers, the Mall source table the migrations make, is empty here."""
    assert conn.execute("SELECT count(*) FROM public.customers").fetchone() == (0,)
    assert _crm("--rows", "100", "--schema", "public", "--if-empty") == 1
    _, err = capsys.readouterr()
    assert err == (
        "error: public.customers exists and was not made by segmentation generate --shape crm, so it is left "
        "alone; choose another schema with --schema NAME\n"
    )
    assert [name for name, _ in _columns(conn, "public.customers")][:2] == ["customer_id", "gender"]
    assert conn.execute("SELECT to_regclass('public.orders')").fetchone() == (None,)


def test_generate_crm_refuses_too_few_rows(database_url, conn, capsys):
    assert _crm("--rows", "0") == 1
    assert capsys.readouterr().err == "error: --rows must be at least 1 (got 0)\n"
    assert conn.execute("SELECT to_regnamespace('crm')").fetchone() == (None,)


@pytest.mark.unit
@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["--shape", "crm", "--table", "public.customers"],
            "error: --table is for --shape mall; --shape crm makes its own tables in --schema (default crm)\n",
        ),
        (
            ["--schema", "crm"],
            "error: --schema is for --shape crm; --shape mall appends to --table (default public.customers)\n",
        ),
    ],
)
def test_the_options_of_the_other_shape_are_refused(capsys, arguments, message):
    assert main(["generate", "--rows", "10", *arguments]) == 1
    assert capsys.readouterr().err == message


@pytest.mark.unit
def test_numeric_12_2_refuses_what_it_cannot_hold():
    for bad in (np.nan, 1e10):
        with pytest.raises(ValueError, match="numeric"):
            encode_rows([("amount", "numeric(12,2)")], {"amount": np.array([1.0, bad])})


def test_binary_copy_sends_what_postgresql_reads_back(conn):
    fields = [("t", "text"), ("d", "date"), ("ts", "timestamptz"), ("a", "numeric(12,2)"), ("b", "bool"), ("n", "int8")]
    columns = {
        "t": np.array(["", "é ü", "cus_8fK2"]),
        "d": np.array(["1999-12-31", "2000-01-01", "2026-02-28"], dtype="datetime64[D]"),
        "ts": np.array(
            ["1970-01-01T00:00:00", "2000-01-01T00:00:00.000001", "2026-06-30T23:59:59.999999"], dtype="datetime64[us]"
        ),
        "a": np.array([-12.5, 0.0, 9_999_999_999.99]),
        "b": np.array([True, False, True]),
        "n": np.array([1, 2, 3]),
    }
    conn.execute("CREATE TABLE wire (t text, d date, ts timestamptz, a numeric(12,2), b boolean, n bigint)")
    with conn.cursor() as cur, cur.copy("COPY wire FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(HEADER + encode_rows(fields, columns) + TRAILER)
    assert conn.execute("SELECT t, d, ts, a::text, b FROM wire ORDER BY n").fetchall() == [
        ("", date(1999, 12, 31), datetime(1970, 1, 1, tzinfo=UTC), "-12.50", True),
        ("é ü", date(2000, 1, 1), datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "0.00", False),
        ("cus_8fK2", date(2026, 2, 28), datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=UTC), "9999999999.99", True),
    ]
