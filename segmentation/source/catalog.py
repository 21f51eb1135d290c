"""The source table as the catalog describes it: a run's table, id column and features are
looked up here first, and an unknown or unusable name ends the run with a message that
lists what does exist. Names reach SQL only as psycopg.sql.Identifier, after they were
found in the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from segmentation.core.rules import GENDER
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.identifiers import TableName, parse_column_name, parse_table_name

_RELKINDS = ("r", "p", "v", "m", "f")  # tables, partitioned tables, views, matviews, foreign tables
INTEGER_TYPES = {"int2", "int4", "int8"}


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
    if columns[id_column].typname not in INTEGER_TYPES:
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
                "(gender is the one text feature, Female/Male or F/M)"
            )
    id_unique = scalar(
        conn,
        """SELECT EXISTS (
               SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
                 AND a.attname = %s)""",
        (oid, id_column),
    )
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
        f"source table {table} does not exist; tables in schema {schema}: {known}. Pass source_table as schema.table"
    )
