"""Putting customers into the source table: a CSV file, or generated customers. The Mall-shaped
table they go into (public.customers unless told otherwise) is created here when it is missing:
`segmentation db upgrade` makes no source table (a configured source is upstream's own)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows
from segmentation.core.csv_file import COLUMNS, Problem, read_csv, validate
from segmentation.core.progress import Progress
from segmentation.core.synthetic import generate
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.identifiers import parse_table_name
from segmentation.source.catalog import Source, resolve_source

_MAX_LISTED = 50


@dataclass
class LoadReport:
    table: str
    loaded: int
    inserted: int
    updated: int
    problems: list[Problem] = field(default_factory=list)

    def problem_lines(self, limit: int = _MAX_LISTED) -> list[str]:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more invalid rows")
        return lines


# The demo source table, as sql/001 used to create it. No CHECK constraints on purpose: upstream
# data is whatever it is, and the flow quarantines what it cannot segment.
_DEMO_TABLE = """CREATE TABLE IF NOT EXISTS {} (
    customer_id    bigint PRIMARY KEY,
    gender         text,
    age            integer,
    annual_income  numeric,   -- thousands of dollars a year
    spending_score integer    -- 1-100
)"""


DEMO_TABLE = "public.customers"


def create_demo_table(conn: psycopg.Connection, table: str = DEMO_TABLE) -> bool:
    """Create the Mall-shaped source table when it is missing, readable by segmentation_writer.
    Returns whether it was created. Runs in the caller's transaction."""
    name = parse_table_name(table)
    if scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name.identifier().as_string(conn),)):
        return False
    conn.execute(sql.SQL(_DEMO_TABLE).format(name.identifier()))
    if scalar(conn, "SELECT to_regrole('segmentation_writer') IS NOT NULL"):
        conn.execute(sql.SQL("GRANT SELECT ON {} TO segmentation_writer").format(name.identifier()))
    return True


def _target(conn: psycopg.Connection, table: str) -> Source:
    # The demo table only: another table named with --table must exist (a typo creates nothing).
    if parse_table_name(table) == parse_table_name(DEMO_TABLE):
        create_demo_table(conn, table)
    target = resolve_source(conn, table, "customer_id", ["gender", "age", "annual_income", "spending_score"])
    if not target.id_unique:
        raise SegmentationError(
            f"{target.table} has no primary key or unique index on customer_id, so rows cannot be "
            "upserted; add one (ALTER TABLE ... ADD PRIMARY KEY (customer_id))"
        )
    return target


def _upsert_from(conn: psycopg.Connection, staging: str, target: Source) -> tuple[int, int]:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in COLUMNS[1:]
    )
    # xmax = 0 only for freshly inserted rows: it tells inserts from updates.
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging} "
            "ON CONFLICT ({id}) DO UPDATE SET {updates} RETURNING (xmax = 0)"
        ).format(
            target=target.table.identifier(),
            columns=columns,
            staging=sql.Identifier(staging),
            id=sql.Identifier("customer_id"),
            updates=updates,
        )
    ).fetchall()
    inserted = sum(1 for (fresh,) in rows if fresh)
    return inserted, len(rows) - inserted


def load_csv(
    conn: psycopg.Connection, path: Path, table: str = "public.customers", skip_invalid: bool = False
) -> LoadReport:
    """Upsert the file's rows by customer id in one transaction. Strict unless skip_invalid:
    one invalid row and nothing is loaded."""
    valid, problems = validate(read_csv(path))
    if problems and not skip_invalid:
        report = LoadReport(table, 0, 0, 0, problems)
        raise SegmentationError(
            f"{path}: {len(problems)} invalid rows, nothing loaded (fix them, or pass --skip-invalid "
            "to load the valid rows):\n" + "\n".join(report.problem_lines())
        )
    with conn.transaction():
        target = _target(conn, table)
        conn.execute(
            "CREATE TEMP TABLE csv_staging (customer_id bigint, gender text, age integer, "
            "annual_income numeric, spending_score integer) ON COMMIT DROP"
        )
        buffer = io.StringIO()
        valid.to_csv(buffer, header=False, index=False)
        with conn.cursor() as cur, cur.copy("COPY csv_staging FROM STDIN (FORMAT CSV)") as copy:
            copy.write(buffer.getvalue())
        inserted, updated = _upsert_from(conn, "csv_staging", target)
    return LoadReport(str(target.table), len(valid), inserted, updated, problems)


def has_customers(conn: psycopg.Connection, table: str) -> bool:
    """Whether the table has any row; False when it does not exist (generate_customers then
    says which tables there are)."""
    name = parse_table_name(table)
    with conn.transaction():
        if not scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name.identifier().as_string(conn),)):
            return False
        return bool(scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(name.identifier())))


_GENERATED = [
    ("customer_id", "int8"),
    ("gender_code", "int2"),
    ("age", "int4"),
    ("annual_income", "float8"),
    ("spending_score", "int4"),
]


def generate_customers(
    conn: psycopg.Connection,
    rows: int,
    seed: int = 0,
    table: str = "public.customers",
    chunk_rows: int = 500_000,
    report: Callable[[str], None] | None = None,
) -> LoadReport:
    """Append `rows` synthetic customers after the highest existing id, with binary COPY.
    report, when given, receives progress lines at a human pace (segmentation.core.progress)."""
    progress = Progress("generate", "customers", rows, start=time.monotonic())
    if rows < 1:
        raise SegmentationError(f"--rows must be at least 1 (got {rows})")
    with conn.transaction():
        target = _target(conn, table)
        first_id = scalar(
            conn,
            sql.SQL("SELECT coalesce(max({}), 0) + 1 FROM {}").format(
                sql.Identifier("customer_id"), target.table.identifier()
            ),
        )
        conn.execute(
            "CREATE TEMP TABLE generated_staging (customer_id bigint, gender_code smallint, age integer, "
            "annual_income float8, spending_score integer) ON COMMIT DROP"
        )
        with conn.cursor() as cur, cur.copy("COPY generated_staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(HEADER)
            for i, start in enumerate(range(0, rows, chunk_rows)):
                n = min(chunk_rows, rows - start)
                copy.write(encode_rows(_GENERATED, generate(n, [seed, i], first_id + start)))
                if report and (line := progress.update(start + n, time.monotonic())):
                    report(line)
            copy.write(TRAILER)
        if report and rows > chunk_rows:
            report(f"generate: {rows:,} customers made; writing them into {target.table}")
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (customer_id, gender, age, annual_income, spending_score) "
                "SELECT customer_id, CASE gender_code WHEN 1 THEN 'Female' ELSE 'Male' END, age, "
                "annual_income::numeric, spending_score FROM generated_staging"
            ).format(target.table.identifier())
        )
    return LoadReport(str(target.table), rows, rows, 0)
