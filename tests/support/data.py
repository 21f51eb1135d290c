"""The tests' data: the Mall Customers file, rows written into a test's database, and a run's
rows kept before retention thins them."""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

MALL_CSV = Path(__file__).resolve().parents[1] / "data" / "Mall_Customers.csv"


def insert_customers(conn, rows, table="public.customers") -> None:
    """rows: (customer_id, gender, age, annual_income, spending_score) tuples."""
    schema, name = table.split(".")
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} (customer_id, gender, age, annual_income, spending_score) FROM STDIN").format(
                sql.Identifier(schema, name)
            )
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def keep_assignments(conn, run_id: int) -> str:
    """Copy a run's full per-customer rows (with distances, margins and the outlier flag as the
    views compute it) while it is current: once another run publishes, retention keeps them only
    as spells, without distances. Returns the copy's name, a table in public of the test's own
    database."""
    table = f"public.assignments_run_{int(run_id)}"
    conn.execute(
        f"CREATE TABLE {table} AS SELECT cs.customer_id, cs.segment_id, cs.distance, cs.margin, "
        "cs.distance > s.outlier_distance AS outlier "
        "FROM segmentation.customer_segments AS cs "
        "JOIN segmentation.segments AS s ON s.run_id = cs.run_id AND s.segment_id = cs.segment_id "
        "WHERE cs.run_id = %s",
        (run_id,),
    )
    return table
