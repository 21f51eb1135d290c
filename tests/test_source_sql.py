"""The source SQL against a real server: the cheap valid-row filter and the quarantine's
reasons are two forms of one rule list and must split every row the same way, and the
COPY reader behind the extract."""

import psycopg
import pytest
from psycopg import sql

from segmentation.core.binary_copy import Decoder
from segmentation.source.catalog import resolve_source
from segmentation.source.copy_out import copy_out
from segmentation.source.queries import feature_fields, quarantine_copy_query, valid_copy_query
from segmentation.source.stream import stream_valid

FEATURES = ["gender", "age", "annual_income", "spending_score"]

# (id, gender, age, annual_income, spending_score, valid)
EDGE_ROWS = [
    (1, "Female", 30, "50", 50, True),
    (2, " MALE ", 0, "0", 1, True),  # spellings and the bounds themselves are valid
    (3, "female", 120, "1e15", 100, True),
    (4, "Male", 121, "50", 50, False),
    (5, "Male", -1, "50", 50, False),
    (6, "Male", 30, "NaN", 50, False),
    (7, "Male", 30, "Infinity", 50, False),
    (8, "Male", 30, "-Infinity", 50, False),
    (9, "Male", 30, "1000000000000000.001", 50, False),
    (10, "Male", 30, "1e400", 50, False),  # beyond float8
    (11, "Male", 30, "-0.5", 50, False),
    (12, "Male", 30, None, 50, False),
    (13, None, 30, "50", 50, False),
    (14, "other", 30, "50", 50, False),
    (15, "Male", None, "50", 50, False),
    (16, "Male", 30, "50", 0, False),
    (17, "Male", 30, "50", 101, False),
    (18, "Male", 30, "50", None, False),
    (19, "Male", 30, "999999999999999.9", 100, True),
    (None, "Male", 30, "50", 50, False),
]


def _split(conn, source):
    valid = {int(i) for chunk in stream_valid(conn, source, 3) for i in chunk.ids}
    with conn.cursor() as cur, cur.copy(quarantine_copy_query(source, 1)) as copy:
        quarantined = list(copy.rows())
    return valid, {None if r[1] is None else int(r[1]): r[2] for r in quarantined}


@pytest.mark.parametrize("income_type", ["numeric", "double precision", "bigint", "integer"])
def test_valid_filter_and_quarantine_reasons_split_every_row_the_same_way(conn, income_type):
    conn.execute(
        sql.SQL(
            "CREATE TABLE edge (customer_id bigint, gender text, age int, annual_income {}, spending_score smallint)"
        ).format(sql.SQL(income_type))
    )
    rows = EDGE_ROWS
    if income_type == "double precision":
        # 1e400 is not representable, and 1e15 + 0.001 rounds to 1e15 in float8.
        rows = [r for r in rows if r[0] not in (9, 10)] + [(9, "Male", 30, "1.0000000000001e15", 50, False)]
    if income_type in ("bigint", "integer"):
        rows = [r for r in rows if r[3] is None or r[3].lstrip("-").isdigit()] + [
            (20, "Male", 30, "-9223372036854775808" if income_type == "bigint" else "-2147483648", 50, False),
            (
                21,
                "Male",
                30,
                "1000000000000001" if income_type == "bigint" else "2147483647",
                50,
                income_type == "integer",
            ),
        ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO edge VALUES (%s, %s, %s, %s, %s)", [r[:5] for r in rows])
    conn.commit()
    source = resolve_source(conn, "public.edge", "customer_id", FEATURES)
    valid, quarantined = _split(conn, source)
    assert valid == {r[0] for r in rows if r[5]}
    assert set(quarantined) == {r[0] for r in rows if not r[5]}
    assert quarantined[None] == "customer_id is NULL"
    if income_type == "numeric":
        assert quarantined[6] == "annual_income is NaN" and quarantined[10].endswith("is absurdly large")
        assert (
            quarantined[9].endswith("is absurdly large")
            and quarantined[11] == "annual_income -0.5 is outside at least 0"
        )
    assert (
        quarantined[14] == "gender 'other' is not Female or Male"
        and quarantined[13] == "gender NULL is not Female or Male"
    )


def test_copy_out_reads_in_pieces_and_leaves_the_connection_usable(conn):
    conn.execute("CREATE TABLE nums AS SELECT g::bigint AS customer_id FROM generate_series(1, 5000) g")
    query = sql.SQL("COPY (SELECT customer_id FROM nums ORDER BY customer_id) TO STDOUT (FORMAT BINARY)")
    decoder = Decoder([("customer_id", "int8")])
    pieces = list(copy_out(conn, query, 1000))
    assert len(pieces) > 10 and all(len(p) >= 1000 for p in pieces[:-1])
    ids = [int(i) for p in pieces for i in decoder.feed(p)["customer_id"]]
    decoder.finish()
    assert ids == list(range(1, 5001))
    assert conn.execute("SELECT count(*) FROM nums").fetchone()[0] == 5000


def test_copy_out_closed_early_cancels_and_the_transaction_can_roll_back(conn):
    conn.execute("CREATE TABLE nums AS SELECT g::bigint AS customer_id FROM generate_series(1, 200000) g")
    conn.commit()
    reader = copy_out(conn, sql.SQL("COPY (SELECT customer_id FROM nums) TO STDOUT (FORMAT BINARY)"), 1000)
    next(reader)
    reader.close()
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM nums").fetchone()[0] == 200000


def test_copy_out_raises_the_servers_error_mid_stream(conn):
    conn.execute("CREATE TABLE nums AS SELECT g::bigint AS customer_id FROM generate_series(1, 100000) g")
    conn.commit()
    query = sql.SQL("COPY (SELECT 1 / (90000 - customer_id) FROM nums) TO STDOUT (FORMAT BINARY)")
    with pytest.raises(psycopg.errors.DivisionByZero):
        for _ in copy_out(conn, query, 1000):
            pass
    conn.rollback()
    with pytest.raises(psycopg.errors.UndefinedTable):
        list(copy_out(conn, sql.SQL("COPY (SELECT * FROM no_such_table) TO STDOUT"), 1000))
    conn.rollback()
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_copy_out_refuses_a_query_that_is_not_a_copy_and_opens_the_callers_transaction(database_url):
    with psycopg.connect(database_url) as conn:  # not autocommit, like the run's snapshot
        with pytest.raises(psycopg.ProgrammingError, match="not a COPY ... TO STDOUT"):
            list(copy_out(conn, sql.SQL("SELECT 1"), 10))
        conn.rollback()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert list(copy_out(conn, sql.SQL("COPY (SELECT txid_current_if_assigned() IS NULL) TO STDOUT"), 1)) == [
            b"t\n"
        ]
        # The COPY ran inside psycopg's implicit transaction, which the caller ends.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()


def test_valid_copy_query_orders_fields_like_the_decoder(conn):
    conn.execute(
        "CREATE TABLE few (customer_id bigint PRIMARY KEY, gender text, age int, annual_income numeric, spending_score int)"
    )
    conn.execute("INSERT INTO few VALUES (7, 'Female', 30, 50.5, 60)")
    source = resolve_source(conn, "public.few", "customer_id", FEATURES)
    columns = Decoder(feature_fields(source)).feed(b"".join(copy_out(conn, valid_copy_query(source), 1)))
    assert {k: v.tolist() for k, v in columns.items()} == {
        "customer_id": [7],
        "x0": [1.0],  # gender, the model's first input
        "x1": [30.0],  # age
        "x2": [50.5],  # annual_income
        "x3": [60.0],  # spending_score
        "gender_code": [1],
    }
