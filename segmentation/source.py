"""The source table: checked against the catalog, validated in SQL, streamed out with
binary COPY from one snapshot. Nothing here formats a name into SQL; names reach SQL only
as psycopg.sql.Identifier after they were found in the catalog."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.binary_copy import Decoder
from segmentation.copy_out import copy_out
from segmentation.core.features import FEATURE_RANGES, GENDER, GENDER_UNKNOWN, Range
from segmentation.db import TableName, parse_column_name, parse_table_name
from segmentation.errors import SegmentationError

_RELKINDS = ("r", "p", "v", "m", "f")  # tables, partitioned tables, views, matviews, foreign tables
_INTEGER_TYPES = {"int2", "int4", "int8"}
_SMALL_INTEGER_TYPES = {"int2", "int4"}
_REASON = "_segmentation_reason"
# Beyond this no customer attribute is real data, and squaring it would overflow KMeans.
ABSURD = 1e15
_ID_COUNT = "_segmentation_id_count"


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # as format_type() prints it
    typname: str
    category: str  # pg_type.typcategory: N numeric, S string, ...


@dataclass(frozen=True)
class Source:
    table: TableName  # schema-qualified, as found in the catalog
    id_column: str
    features: tuple[str, ...]
    columns: dict[str, Column]
    id_unique: bool  # a primary key or unique index on the id column alone
    has_gender: bool  # a text gender column to report gender shares from

    @property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if f != GENDER)


def resolve_source(conn: psycopg.Connection, source_table: str, id_column: str, features: Sequence[str]) -> Source:
    table = parse_table_name(source_table)
    id_column = parse_column_name(id_column)
    features = tuple(parse_column_name(f) for f in features)
    if not features:
        raise SegmentationError("no features given; pass at least one column name, e.g. annual_income,spending_score")
    if len(set(features)) != len(features):
        raise SegmentationError(f"features lists a column twice: {', '.join(features)}")
    if id_column in features:
        raise SegmentationError(f"the id column {id_column} cannot also be a feature")

    oid, table = _find_table(conn, table)
    columns = {
        name: Column(name, type_name, typname, category)
        for name, type_name, typname, category in conn.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typcategory
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
               WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
            (oid,),
        )
    }
    listing = ", ".join(f"{c.name} ({c.type_name})" for c in columns.values())
    for name in (id_column, *features):
        if name not in columns:
            raise SegmentationError(f"column {name} does not exist in {table}; its columns are: {listing}")
    if columns[id_column].typname not in _INTEGER_TYPES:
        raise SegmentationError(
            f"id column {id_column} of {table} is {columns[id_column].type_name}; it must be an integer column"
        )
    for name in features:
        column = columns[name]
        if name == GENDER:
            if column.category != "S":
                raise SegmentationError(f"column gender of {table} is {column.type_name}; it must be text")
        elif column.category != "N":
            raise SegmentationError(
                f"feature column {name} of {table} is {column.type_name}; features must be numeric "
                "(gender is the one text feature, encoded Female/Male)"
            )
    id_unique = conn.execute(
        """SELECT EXISTS (
               SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
                 AND a.attname = %s)""",
        (oid, id_column),
    ).fetchone()[0]
    has_gender = GENDER in columns and columns[GENDER].category == "S"
    return Source(table, id_column, features, columns, id_unique, has_gender)


def _find_table(conn: psycopg.Connection, table: TableName) -> tuple[int, TableName]:
    if table.schema is None:
        row = conn.execute(
            """SELECT c.oid, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relname = %s AND c.relkind = ANY(%s) AND n.nspname = ANY(current_schemas(false))
               ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1""",
            (table.name, list(_RELKINDS)),
        ).fetchone()
    else:
        row = conn.execute(
            """SELECT c.oid, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relname = %s AND n.nspname = %s AND c.relkind = ANY(%s)""",
            (table.name, table.schema, list(_RELKINDS)),
        ).fetchone()
    if row is not None:
        return row[0], TableName(row[1], table.name)
    schema = table.schema or "public"
    existing = [
        r[0]
        for r in conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relkind = ANY(%s) ORDER BY c.relname LIMIT 50""",
            (schema, list(_RELKINDS)),
        )
    ]
    known = ", ".join(existing) if existing else "none"
    raise SegmentationError(
        f"source table {table} does not exist; tables in schema {schema}: {known}. "
        "Pass source_table as schema.table"
    )


def pct(name: str) -> str:
    """A name inside a format() template: its % signs are data, not placeholders."""
    return name.replace("%", "%%")


def _rules(source: Source) -> list[tuple[sql.Composable, sql.Composable]]:
    """(condition, reason) pairs: a row is invalid when any condition holds, and the first
    that holds is its reason. Every condition is TRUE or FALSE, never NULL: each column is
    tested for NULL before it is compared."""
    ident = sql.Identifier
    rules: list[tuple[sql.Composable, sql.Composable]] = []

    def when(condition: sql.Composable, reason: sql.Composable) -> None:
        rules.append((sql.SQL("({})").format(condition), reason))

    def text(value: str) -> sql.Literal:
        return sql.Literal(value)

    cid = ident(source.id_column)
    when(sql.SQL("{} IS NULL").format(cid), text(f"{source.id_column} is NULL"))
    if not source.id_unique:
        when(
            sql.SQL("{} > 1").format(ident(_ID_COUNT)),
            sql.SQL("format({}, {}, {})").format(
                text(f"{pct(source.id_column)} %s appears %s times in the source"), cid, ident(_ID_COUNT)
            ),
        )
    for name in source.features:
        col = ident(name)
        column = source.columns[name]
        if name == GENDER:
            when(
                _gender_invalid(col),
                sql.SQL("format({}, coalesce(quote_literal({}), 'NULL'))").format(
                    text("gender %s is not Female or Male"), col
                ),
            )
            continue
        when(sql.SQL("{} IS NULL").format(col), text(f"{name} is NULL"))
        if column.typname not in _INTEGER_TYPES:
            # Compared in the column's own type: a cast to float8 first would fail on a
            # numeric too large for it.
            when(
                sql.SQL("{} IN ('NaN', 'Infinity', '-Infinity')").format(col),
                sql.SQL("format({}, {})").format(text(f"{pct(name)} is %s"), col),
            )
        if column.typname not in _SMALL_INTEGER_TYPES:  # those cannot hold an absurd value
            # A literal of the column's own kind keeps the comparison in its type (an integer
            # compared with a numeric literal is cast row by row), and no abs(): abs() of the
            # smallest bigint overflows.
            bound = int(ABSURD) if column.typname in _INTEGER_TYPES else ABSURD
            when(
                sql.SQL("{} < {} OR {} > {}").format(col, sql.Literal(-bound), col, sql.Literal(bound)),
                sql.SQL("format({}, {})").format(text(f"{pct(name)} %s is absurdly large"), col),
            )
        bounds = FEATURE_RANGES.get(name)
        if bounds is not None:
            outside = text(f"{pct(name)} %s is outside {bounds.describe()}")
            if bounds.low is not None:
                when(sql.SQL("{} < {}").format(col, sql.Literal(bounds.low)), sql.SQL("format({}, {})").format(outside, col))
            if bounds.high is not None:
                when(sql.SQL("{} > {}").format(col, sql.Literal(bounds.high)), sql.SQL("format({}, {})").format(outside, col))
    return rules


# The exact spellings are tested first: lower(btrim()) on every row costs a tenth of the read.
def _gender_invalid(col: sql.Composable) -> sql.Composable:
    return sql.SQL(
        "({c} IS NULL OR ({c} NOT IN ('Female', 'Male') AND lower(btrim({c})) NOT IN ('female', 'male')))"
    ).format(c=col)


def gender_code(col: sql.Composable, otherwise: sql.Composable) -> sql.Composable:
    """1 for female, 0 for male (any case, surrounding spaces ignored), else `otherwise`."""
    return sql.SQL(
        "CASE {c} WHEN 'Female' THEN 1 WHEN 'Male' THEN 0 "
        "ELSE CASE lower(btrim({c})) WHEN 'female' THEN 1 WHEN 'male' THEN 0 ELSE {otherwise} END END"
    ).format(c=col, otherwise=otherwise)


def _reason(source: Source) -> sql.Composable:
    """One CASE expression: why a row cannot be segmented, or NULL when it can."""
    cases = [sql.SQL("WHEN {} THEN {}").format(condition, reason) for condition, reason in _rules(source)]
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(cases))


def _invalid(source: Source) -> sql.Composable:
    """The same rules as one cheap boolean, TRUE exactly when _reason is not NULL: each
    numeric feature is one range test, since PostgreSQL orders NaN above every number
    (and +-Infinity beyond every finite one), so the absurd-value bound also rejects them.
    A third of the cost of the CASE, which tests each rule separately to name it."""
    ident = sql.Identifier
    parts: list[sql.Composable] = [sql.SQL("{} IS NULL").format(ident(source.id_column))]
    if not source.id_unique:
        parts.append(sql.SQL("{} > 1").format(ident(_ID_COUNT)))
    for name in source.features:
        col = ident(name)
        if name == GENDER:
            parts.append(_gender_invalid(col))
            continue
        low, high = _accepted_range(source.columns[name], FEATURE_RANGES.get(name))
        tests = ([sql.SQL("{} >= {}").format(col, sql.Literal(low))] if low is not None else []) + (
            [sql.SQL("{} <= {}").format(col, sql.Literal(high))] if high is not None else []
        )
        within = sql.SQL(" AND ").join(tests) if tests else sql.SQL("true")
        parts.append(sql.SQL("({} IS NULL OR NOT ({}))").format(col, within))
    return sql.SQL(" OR ").join(parts)


def _accepted_range(column: Column, bounds: Range | None) -> tuple[float | None, float | None]:
    low = bounds.low if bounds is not None else None
    high = bounds.high if bounds is not None else None
    if column.typname in _SMALL_INTEGER_TYPES:  # cannot hold an absurd value
        return low, high
    absurd = int(ABSURD) if column.typname in _INTEGER_TYPES else ABSURD
    return (-absurd if low is None else max(low, -absurd)), (absurd if high is None else min(high, absurd))


def _source_rows(source: Source, blocks: tuple[int, int | None] | None = None) -> sql.Composable:
    """Every source row (in blocks [first, end) of the table when given), with how often its
    id occurs when the id is not known unique."""
    where = sql.SQL("")
    if blocks is not None:
        first, end = blocks
        where = sql.SQL(" WHERE s.ctid >= {}::tid").format(sql.Literal(f"({int(first)},0)"))
        if end is not None:
            where += sql.SQL(" AND s.ctid < {}::tid").format(sql.Literal(f"({int(end)},0)"))
    return sql.SQL("SELECT s.*{} FROM {} AS s{}").format(
        sql.SQL("")
        if source.id_unique
        else sql.SQL(", count(*) OVER (PARTITION BY s.{}) AS {}").format(
            sql.Identifier(source.id_column), sql.Identifier(_ID_COUNT)
        ),
        source.table.identifier(),
        where,
    )


def _checked_rows(source: Source) -> sql.Composable:
    """Every source row with its reason column (NULL for a valid row)."""
    return sql.SQL("SELECT q.*, {} AS {} FROM ({}) AS q").format(
        _reason(source), sql.Identifier(_REASON), _source_rows(source)
    )


def quarantine_copy_query(source: Source, run_id: int) -> sql.Composable:
    """Text-format COPY of the invalid rows, shaped like segmentation.quarantine."""
    drop = [sql.Literal(_REASON)] + ([] if source.id_unique else [sql.Literal(_ID_COUNT)])
    return sql.SQL(
        "COPY (SELECT {run_id}::bigint, c.{id}::bigint, c.{reason}, to_jsonb(c) - {drop} FROM ({rows}) AS c "
        "WHERE c.{reason} IS NOT NULL) TO STDOUT"
    ).format(
        run_id=sql.Literal(run_id),
        id=sql.Identifier(source.id_column),
        reason=sql.Identifier(_REASON),
        drop=sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(drop)),
        rows=_checked_rows(source),
    )


def count_rows(conn: psycopg.Connection, source: Source) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(source.table.identifier())).fetchone()[0]


def feature_fields(source: Source) -> list[tuple[str, str]]:
    return [("customer_id", "int8"), *[(f, "float8") for f in source.features], ("gender_code", "int2")]


def valid_copy_query(source: Source, blocks: tuple[int, int | None] | None = None) -> sql.Composable:
    """Binary COPY of the valid rows (in blocks [first, end) of the table when given): id,
    features as float8, gender code; never NULL."""
    code = (
        gender_code(sql.SQL("c.{}").format(sql.Identifier(GENDER)), sql.Literal(GENDER_UNKNOWN))
        if source.has_gender
        else sql.Literal(GENDER_UNKNOWN)
    )
    values = []
    for name in source.features:
        if name == GENDER:  # a valid row's gender is Female or Male, so the code is 1 or 0
            values.append(sql.SQL("({})::float8").format(code))
        else:
            values.append(sql.SQL("c.{}::float8").format(sql.Identifier(name)))
    return sql.SQL(
        "COPY (SELECT c.{id}::bigint, {values}, ({gender})::smallint FROM ({rows}) AS c WHERE NOT ({invalid})) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(
        id=sql.Identifier(source.id_column),
        values=sql.SQL(", ").join(values),
        gender=code,
        rows=_source_rows(source, blocks),
        invalid=_invalid(source),
    )


@dataclass
class Chunk:
    ids: np.ndarray  # int64
    X: np.ndarray  # float64, (n, features), original units
    gender: np.ndarray  # int16 codes

    def __len__(self) -> int:
        return len(self.ids)


def stream_valid(
    conn: psycopg.Connection, source: Source, chunk_rows: int, query: sql.Composable | None = None
) -> Iterator[Chunk]:
    """The valid rows (of valid_copy_query(source) unless given) in chunks of about
    chunk_rows, straight from binary COPY into numpy."""
    fields = feature_fields(source)
    decoder = Decoder(fields)
    target = max(1, chunk_rows) * decoder.dtype.itemsize
    for piece in copy_out(conn, query if query is not None else valid_copy_query(source), target):
        columns = decoder.feed(piece)
        if len(columns["customer_id"]):
            yield _chunk(columns, source)
    decoder.finish()


def _chunk(columns: dict[str, np.ndarray], source: Source) -> Chunk:
    X = np.column_stack([columns[f] for f in source.features]) if source.features else np.empty((0, 0))
    return Chunk(columns["customer_id"], X, columns["gender_code"])
