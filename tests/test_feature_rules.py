"""Feature columns outside the source contract, through the flow: every numeric type, in a
table and in a view over it, gets the same checks as the contract's columns (missing, not
finite, absurd, tiny) but no range, and each bad value is quarantined with its reason
while every good row is segmented."""

import pytest
from psycopg import sql

from segmentation.flows.segmentation import customer_segmentation

pytestmark = pytest.mark.usefixtures("prefect_harness")

# A feature of each numeric type; none has a range in the source contract.
COLUMNS = {
    "visits": "integer",
    "frequency": "bigint",
    "basket": "real",
    "monetary": "double precision",
    "recency_days": "numeric",
}
FEATURES = list(COLUMNS)
GOOD_ROWS = 400

# (column, value as typed into the column, reason). Each value only where its type holds it:
# no NaN, infinity or fraction in an integer, no 1e16 in an integer either; 1e-400 is below
# real and double precision, which refuse it as out of range, so only numeric holds it.
TINY_NUMERIC = "0." + "0" * 399 + "1"  # 1e-400 as numeric prints it
BAD = [
    *[(column, None, f"{column} is NULL") for column in COLUMNS],
    *[
        (column, value, f"{column} is {value}")
        for column in ("basket", "monetary", "recency_days")
        for value in ("NaN", "Infinity", "-Infinity")
    ],
    ("frequency", "10000000000000000", "frequency 10000000000000000 is absurdly large"),
    ("frequency", "-9223372036854775808", "frequency -9223372036854775808 is absurdly large"),
    ("basket", "1e16", "basket 1e+16 is absurdly large"),
    ("monetary", "1e16", "monetary 1e+16 is absurdly large"),
    ("monetary", "-1e16", "monetary -1e+16 is absurdly large"),
    ("monetary", "1e-320", "monetary 1e-320 is absurdly small (closer to 0 than 1e-300)"),
    ("recency_days", "1e16", "recency_days 10000000000000000 is absurdly large"),
    ("recency_days", "1e-400", f"recency_days {TINY_NUMERIC} is absurdly small (closer to 0 than 1e-300)"),
    ("recency_days", "-1e-400", f"recency_days -{TINY_NUMERIC} is absurdly small (closer to 0 than 1e-300)"),
]
BAD_IDS = {100_001 + i: reason for i, (_, _, reason) in enumerate(BAD)}


def good_row(i: int) -> dict[str, str]:
    """Three well-separated groups, with negative values and zeros: no range to be outside of."""
    group = i % 3
    return {
        "visits": str(-40 + 40 * group + i % 5),
        "frequency": str(100 * group + i % 7),
        "basket": str(-50.5 + 50 * group + (i % 3) * 0.25),
        "monetary": str(1000.0 * group + i % 11),
        "recency_days": str(-30 + 30 * group + (i % 4) / 4),
    }


def create_activity(conn) -> None:
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in COLUMNS.items())
    conn.execute(sql.SQL("CREATE TABLE public.activity (customer_id bigint PRIMARY KEY, {})").format(columns))
    rows = [(i, good_row(i)) for i in range(1, GOOD_ROWS + 1)]
    rows += [
        (customer_id, {**good_row(customer_id), column: value}) for customer_id, (column, value, _) in zip(BAD_IDS, BAD)
    ]
    copy_sql = sql.SQL("COPY public.activity (customer_id, {}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for customer_id, values in rows:
            copy.write_row([customer_id, *(values[c] for c in COLUMNS)])
    conn.execute("CREATE VIEW public.activity_view AS SELECT * FROM public.activity")


@pytest.mark.parametrize("source_table", ["public.activity", "public.activity_view"])
def test_bad_values_of_every_numeric_type_are_quarantined_and_good_rows_segmented(conn, source_table):
    create_activity(conn)
    state = customer_segmentation(
        n_clusters=3, features=FEATURES, source_table=source_table, id_column="customer_id", return_state=True
    )
    assert state.is_completed(), state.message
    result = state.result()
    # The run itself raises when the valid-row filter and the reasons split the rows differently.
    assert (result["n_customers"], result["n_quarantined"]) == (GOOD_ROWS, len(BAD))
    quarantined = dict(
        conn.execute(
            "SELECT customer_id, reason FROM segmentation.quarantine WHERE run_id = %s", (result["run_id"],)
        ).fetchall()
    )
    assert quarantined == BAD_IDS
    # The row is kept as the source holds it.
    nan_basket = next(i for i, reason in BAD_IDS.items() if reason == "basket is NaN")
    record = conn.execute(
        "SELECT record->>'basket', record->>'recency_days' FROM segmentation.quarantine "
        "WHERE run_id = %s AND customer_id = %s",
        (result["run_id"], nan_basket),
    ).fetchone()
    assert record == ("NaN", good_row(nan_basket)["recency_days"])
    segmented = conn.execute(
        "SELECT run_id, customer_id FROM segmentation_bi.current_customer_segments ORDER BY customer_id"
    ).fetchall()
    assert segmented == [(result["run_id"], i) for i in range(1, GOOD_ROWS + 1)]
    assert (
        conn.execute("SELECT count(DISTINCT segment_id) FROM segmentation_bi.current_customer_segments").fetchone()[0]
        == 3
    )
