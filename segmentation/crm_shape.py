"""The CRM shape, `segmentation generate --shape crm`: customers with text ids, their orders
and the view customer_rfm, in a schema of their own (sql/shapes/crm.sql), filled with binary
COPY from segmentation.core.synthetic_crm; the keys come after the rows (crm_keys.sql).

It fills a new schema, or one whose tables it made before hold no rows (they are replaced);
never a table with rows in it, nor one of the same name it did not make.

Who commits: generate, in one transaction of its own, so a schema is filled completely or not
at all; an advisory lock on the schema's name keeps two of them from filling it at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core import synthetic_crm
from segmentation.core.binary_copy import HEADER, TRAILER, encode_rows
from segmentation.core.progress import Progress
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.identifiers import TableName, parse_schema_name
from segmentation.migrations import SQL_DIR

SHAPE_SQL = SQL_DIR / "shapes" / "crm.sql"
KEYS_SQL = SQL_DIR / "shapes" / "crm_keys.sql"
TABLES = ("customers", "orders")
MADE_BY = "segmentation generate --shape crm"  # in the tables' comments (crm.sql): the shape's own
VIEW = "customer_rfm"
# pg_advisory_xact_lock(LOCK_CLASS, hashtext(schema)): the two-key space, apart from the
# migrations' and the runs' single-key locks.
LOCK_CLASS = 0x5E6

CUSTOMER_FIELDS = [
    ("id", "text"),
    ("email", "text"),
    ("plan", "text"),
    ("country", "text"),
    ("signup_date", "date"),
    ("gender", "text"),
    ("marketing_opt_in", "bool"),
]
ORDER_FIELDS = [("customer_id", "text"), ("ordered_at", "timestamptz"), ("amount", "numeric(12,2)")]


@dataclass(frozen=True)
class CrmReport:
    schema: str
    customers: int
    orders: int
    without_orders: int  # customers who never ordered
    seconds: float

    def name(self, relation: str) -> str:
        """A relation of the shape as PostgreSQL needs it typed: crm.customers."""
        return str(TableName(self.schema, relation))


def _in_the_way(conn: psycopg.Connection, schema: str, if_empty: bool) -> bool:
    """Whether the shape's tables in schema hold rows that if_empty leaves as they are; refuses
    them without if_empty, and refuses a table of the same name the shape did not make. False:
    the schema may be filled (its tables are new, or the shape's own without rows)."""
    for table in TABLES:
        name = sql.Identifier(schema, table)
        found = conn.execute(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (name.as_string(conn),),
        ).fetchone()
        if found is None:
            continue
        shown = TableName(schema, table)
        if scalar(conn, sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(name)):
            if if_empty:
                return True
            raise SegmentationError(
                f"{shown} already holds rows, and --shape crm only fills a new or empty schema; choose "
                "another with --schema NAME, or pass --if-empty to leave this one as it is"
            )
        if MADE_BY not in (found[0] or ""):
            raise SegmentationError(
                f"{shown} exists and was not made by {MADE_BY}, so it is left alone; choose another schema with --schema NAME"
            )
    return False


def _copy(
    conn: psycopg.Connection,
    table: sql.Identifier,
    fields: Sequence[tuple[str, str]],
    columns: dict[str, np.ndarray],
    chunk_rows: int,
    written: Callable[[int], None],
) -> None:
    n = len(columns[fields[0][0]])
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in fields)
    # FREEZE, as the table is new in this transaction: its rows go in frozen and marked visible, so
    # the first query after the load does not rewrite every page to set their hint bits.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY, FREEZE)").format(table, names)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(HEADER)
        for start in range(0, n, chunk_rows):
            chunk = {name: columns[name][start : start + chunk_rows] for name, _ in fields}
            copy.write(encode_rows(fields, chunk))
            written(len(chunk[fields[0][0]]))
        copy.write(TRAILER)


def generate(
    conn: psycopg.Connection,
    rows: int,
    seed: int,
    schema: str,
    *,
    if_empty: bool = False,
    chunk_rows: int = 200_000,
    report: Callable[[str], None] | None = None,
) -> CrmReport | None:
    """Make the shape with `rows` customers and their orders in schema (as typed: crm, "CRM").
    A table of the shape already holding rows is refused, or with if_empty left as it is
    (returns None). report, when given, receives progress lines at a human pace
    (segmentation.core.progress)."""
    started = time.monotonic()
    if rows < 1:
        raise SegmentationError(f"--rows must be at least 1 (got {rows})")
    schema = parse_schema_name(schema)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
            if _in_the_way(conn, schema, if_empty):
                return None
            as_of = scalar(conn, "SELECT now()").astimezone(UTC).replace(tzinfo=None)
            data = synthetic_crm.generate(rows, seed, np.datetime64(as_of, "us"))
            _create(conn, schema)
            orders = len(data.orders["customer_id"])
            progress = Progress("generate", "rows of customers and orders", rows + orders, start=started)
            done = 0

            def written(n: int) -> None:
                nonlocal done
                done += n
                if report and (line := progress.update(done, time.monotonic())):
                    report(line)

            _copy(conn, sql.Identifier(schema, "customers"), CUSTOMER_FIELDS, data.customers, chunk_rows, written)
            _copy(conn, sql.Identifier(schema, "orders"), ORDER_FIELDS, data.orders, chunk_rows, written)
            if report and rows + orders > chunk_rows:
                report(f"generate: {rows:,} customers and {orders:,} orders written; adding their keys")
            _in_schema(conn, schema, KEYS_SQL.read_text(encoding="utf-8"))
            # Statistics now: the first queries on the view come before autovacuum's.
            conn.execute(
                sql.SQL("ANALYZE {}, {}").format(sql.Identifier(schema, "customers"), sql.Identifier(schema, "orders"))
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = " ".join(str(exc).split())
        raise SegmentationError(
            f"this login may not create the schema {TableName(None, schema)} or tables in it ({reason}); "
            "generate as the database's owner, or into a schema this login owns (--schema NAME)"
        ) from None
    never = int(np.count_nonzero(data.frequency == 0))
    return CrmReport(str(TableName(None, schema)), rows, orders, never, time.monotonic() - started)


def _in_schema(conn: psycopg.Connection, schema: str, text: str) -> None:
    """Run a file of the shape, whose names are unqualified, in schema (until the transaction ends)."""
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(text)


def _create(conn: psycopg.Connection, schema: str) -> None:
    """The shape's tables and view, new; any already there are the shape's own, without rows (_in_the_way)."""
    # Checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists.
    if scalar(conn, "SELECT to_regnamespace(%s) IS NULL", (sql.Identifier(schema).as_string(conn),)):
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(schema, VIEW)))
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
            sql.Identifier(schema, "orders"), sql.Identifier(schema, "customers")
        )
    )
    _in_schema(conn, schema, SHAPE_SQL.read_text(encoding="utf-8"))
