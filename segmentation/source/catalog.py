"""The source table as the catalog describes it: a run's table, id column and features are
looked up here first, and an unknown or unusable name ends the run with a message that
lists what does exist. Names reach SQL only as psycopg.sql.Identifier, after they were
found in the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import psycopg
from psycopg import sql

from segmentation.core import feature_spec
from segmentation.core.feature_plan import TEXT_TYPES, FeaturePlan, PlannedFeature
from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.rules import GENDER
from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.identifiers import TableName, parse_column_name, parse_table_name
from segmentation.source import customer_keys

_RELKINDS = ("r", "p", "v", "m", "f")  # tables, partitioned tables, views, matviews, foreign tables
INTEGER_TYPES = customer_keys.INTEGER_TYPES
DATE_TYPES = {"date", "timestamp", "timestamptz"}


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # as format_type() prints it
    typname: str
    category: str  # pg_type.typcategory: N numeric, S string, B boolean, E enum, D date/time, ...


@dataclass(frozen=True)
class Source:
    table: TableName  # schema-qualified, as found in the catalog
    id_column: str
    features: tuple[str, ...]
    columns: dict[str, Column]
    id_unique: bool  # a primary key or unique index on the id column alone
    has_gender: bool  # a text gender column to report gender shares from
    # The features as the model reads them (segmentation.core.feature_plan); left out: the
    # features are bare column names.
    plan: FeaturePlan = None  # type: ignore[assignment]
    # The id column's type when its ids are keyed by hash (segmentation.source.customer_keys),
    # as format_type() prints it; None: integer ids, their own keys.
    id_type: str | None = None

    def __post_init__(self) -> None:
        if self.plan is None:
            plain = tuple(
                PlannedFeature(FeatureSpec.model_validate({"column": f}), self.columns[f].typname)
                for f in self.features
            )
            object.__setattr__(self, "plan", FeaturePlan(plain))

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.plan.input_names


def resolve_source(
    conn: psycopg.Connection,
    source_table: str,
    id_column: str,
    features: Sequence[str | dict | FeatureSpec],
    as_of: datetime | None = None,
) -> Source:
    """The source, its id and its features as the catalog has them. A category's levels are
    read from the source here (its valid rows, most frequent first); `as_of` is the instant
    days_since counts from."""
    table = parse_table_name(source_table)
    id_column = parse_column_name(id_column)
    specs = tuple(
        s.model_copy(update={"column": parse_column_name(s.column)}) for s in feature_spec.parse_all(features)
    )
    columns_named = tuple(s.column for s in specs)
    if id_column in columns_named:
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
    for name in (id_column, *columns_named):
        if name not in columns:
            raise SegmentationError(f"column {name} does not exist in {table}; its columns are: {listing}")
    id_col = columns[id_column]
    if id_col.typname not in customer_keys.ID_TYPES:
        raise SegmentationError(
            f"id column {id_column} of {table} is {id_col.type_name}; an id must be an integer, text, varchar, "
            "char or uuid column: choose one, or cast it to text in a view"
        )
    id_type = None if id_col.typname in customer_keys.INTEGER_TYPES else id_col.type_name
    for spec in specs:
        _check_kind(spec, columns[spec.column], table)
    id_unique = scalar(
        conn,
        """SELECT EXISTS (
               SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
                 AND a.attname = %s)""",
        (oid, id_column),
    )
    has_gender = GENDER in columns and columns[GENDER].category == "S"
    plan = FeaturePlan(tuple(PlannedFeature(s, columns[s.column].typname) for s in specs), as_of)
    source = Source(table, id_column, columns_named, columns, id_unique, has_gender, plan, id_type)
    if any(s.kind == "category" for s in specs):
        source = replace(source, plan=_with_levels(conn, source))
    return source


def _check_kind(spec: FeatureSpec, column: Column, table: TableName) -> None:
    """The column's type fits the feature's kind; else one line naming the kind that would."""
    name, shown = spec.column, f"feature column {spec.column} of {table} is {column.type_name}"
    if spec.kind == "number":
        if column.category == "N":
            return
        if spec.plain and name == GENDER and column.typname in TEXT_TYPES:
            return  # the gender rule: Female/Male or F/M
        if column.typname in DATE_TYPES:
            hint = f"use {name}:days_since for the days since it"
        elif column.category in ("S", "B", "E"):
            hint = f"use {name}:category for one-hot levels"
        else:
            hint = "choose a numeric column"
        raise SegmentationError(f"{shown}; a number feature must be numeric: {hint}")
    if spec.kind == "days_since" and column.typname not in DATE_TYPES:
        raise SegmentationError(f"{shown}; days_since needs a date or timestamp column")
    if spec.kind == "category" and not (column.category in ("S", "B", "E") or column.typname in INTEGER_TYPES):
        raise SegmentationError(f"{shown}; a category must be text, boolean, an enum or integer codes")


def _with_levels(conn: psycopg.Connection, source: Source) -> FeaturePlan:
    """Each category's levels: the max_levels most frequent among the valid rows (ties in
    byte order, so a rerun finds the same), and whether there are more. One pass over the
    source for every category feature."""
    from segmentation.source import queries, validity  # they compile SQL for a Source

    categories = [n for n, f in enumerate(source.plan.features, start=1) if f.spec.kind == "category"]
    values = sql.SQL(", ").join(
        sql.SQL('({}, c.{}::text COLLATE "C")').format(
            sql.Literal(n), sql.Identifier(source.plan.features[n - 1].column)
        )
        for n in categories
    )
    # The most frequent max_levels + 1 of each: one more than kept says there are others.
    wanted = [
        source.plan.features[n - 1].spec.max_levels + 1 if n in categories else 0 for n in range(1, max(categories) + 1)
    ]
    rows = conn.execute(
        sql.SQL(
            "SELECT v.feature, v.level FROM ("
            " SELECT l.feature, l.level, row_number() OVER (PARTITION BY l.feature ORDER BY count(*) DESC, l.level) AS r"
            " FROM ({rows}) AS c CROSS JOIN LATERAL (VALUES {values}) AS l(feature, level)"
            " WHERE l.level IS NOT NULL AND NOT ({invalid}) GROUP BY l.feature, l.level) AS v"
            " WHERE v.r <= (%s::int[])[v.feature] ORDER BY v.feature, v.r"
        ).format(rows=queries.source_rows(source), values=values, invalid=validity.invalid(source)),
        (wanted,),
    ).fetchall()
    found: dict[int, list[str]] = {n: [] for n in categories}
    for n, level in rows:
        found[n].append(level)
    resolved = []
    for n, feature in enumerate(source.plan.features, start=1):
        if n not in found:
            resolved.append(feature)
            continue
        levels = tuple(found[n][: feature.spec.max_levels])
        # No level at all (no valid row has a value): one input for every level, so that the
        # run goes on to say it has no customers to cluster.
        other = len(found[n]) > feature.spec.max_levels or not levels
        resolved.append(replace(feature, levels=levels, other=other))
    return FeaturePlan(tuple(resolved), source.plan.as_of)


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
