"""The COPY queries a run reads its source with: the valid rows in binary, for the extract
and the scoring pass, and the invalid rows with their reasons, for the quarantine."""

from __future__ import annotations

import psycopg
from psycopg import sql

from segmentation.core.rules import GENDER, GENDER_UNKNOWN
from segmentation.db import scalar
from segmentation.source import customer_keys, feature_sql, validity
from segmentation.source.catalog import Source

Blocks = tuple[int, int | None]  # table blocks [first, end); end None: to the end
IdRange = tuple[int, int]  # ids [start, stop)


def source_rows(source: Source, blocks: Blocks | None = None, ids: IdRange | None = None) -> sql.Composable:
    """Every source row (in the given blocks of the table, or with an id in the given range),
    with how often its id occurs when the id is not known unique. A range of ids holds every
    row of each of its ids, so the count is right within it (a range of blocks does not)."""
    where: sql.Composable = sql.SQL("")
    if blocks is not None:
        first, end = blocks
        where = sql.SQL(" WHERE s.ctid >= {}::tid").format(sql.Literal(f"({int(first)},0)"))
        if end is not None:
            where += sql.SQL(" AND s.ctid < {}::tid").format(sql.Literal(f"({int(end)},0)"))
    elif ids is not None:
        key = _key(source, "s", bare=True)
        where = sql.SQL(" WHERE {key} >= {start} AND {key} < {stop}").format(
            key=key, start=sql.Literal(int(ids[0])), stop=sql.Literal(int(ids[1]))
        )
    return sql.SQL("SELECT s.*{} FROM {} AS s{}").format(
        sql.SQL("")
        if source.id_unique
        else sql.SQL(", count(*) OVER (PARTITION BY s.{}) AS {}").format(
            sql.Identifier(source.id_column), sql.Identifier(validity.ID_COUNT)
        ),
        source.table.identifier(),
        where,
    )


def quarantine_copy_query(source: Source, run_id: int) -> sql.Composed:
    """Text-format COPY of the invalid rows, shaped like segmentation.quarantine."""
    added = [sql.Literal(validity.REASON)] + ([] if source.id_unique else [sql.Literal(validity.ID_COUNT)])
    checked = sql.SQL("SELECT q.*, {} AS {} FROM ({}) AS q").format(
        validity.reason(source), sql.Identifier(validity.REASON), source_rows(source)
    )
    return sql.SQL(
        "COPY (SELECT {run_id}::bigint, {key}, c.{reason}, to_jsonb(c) - {added} FROM ({rows}) AS c "
        "WHERE c.{reason} IS NOT NULL) TO STDOUT"
    ).format(
        run_id=sql.Literal(run_id),
        key=_key(source),
        reason=sql.Identifier(validity.REASON),
        added=sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(added)),
        rows=checked,
    )


def count_rows(conn: psycopg.Connection, source: Source) -> int:
    return int(scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(source.table.identifier())))


def input_field(j: int) -> str:
    """The name of the model's j-th input among the fields of valid_copy_query."""
    return f"x{j}"


RULE_FIELD = "rule"


def feature_fields(source: Source) -> list[tuple[str, str]]:
    """The fields of valid_copy_query, in order, as (name, PostgreSQL type): the id, the
    model's inputs, the gender code, and the missing-value segment when the run has any."""
    fields = [("customer_id", "int8"), *[(input_field(j), "float8") for j in range(len(source.inputs))]]
    fields.append(("gender_code", "int2"))
    if source.plan.rule_features:
        fields.append((RULE_FIELD, "int2"))
    return fields


def valid_copy_query(source: Source, blocks: Blocks | None = None, ids: IdRange | None = None) -> sql.Composed:
    """Binary COPY of the valid rows (in the given blocks of the table, or range of ids): id,
    the model's inputs as float8 (segmentation.source.feature_sql), gender code, and the
    missing-value segment (0: none) when the run has any; never NULL."""
    code = (
        validity.gender_code(sql.SQL("c.{}").format(sql.Identifier(GENDER)), sql.Literal(GENDER_UNKNOWN))
        if source.has_gender
        else sql.Literal(GENDER_UNKNOWN)
    )
    raws = feature_sql.source_raws(source.plan)
    values = feature_sql.inputs(source.plan, raws)
    extra = (
        sql.SQL(", ({})::smallint").format(feature_sql.rule(source.plan, raws))
        if source.plan.rule_features
        else sql.SQL("")
    )
    return sql.SQL(
        "COPY (SELECT {key}, {values}, ({gender})::smallint{extra} FROM ({rows}) AS c WHERE NOT ({invalid})) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(
        key=_key(source),
        values=sql.SQL(", ").join(values),
        gender=code,
        extra=extra,
        rows=source_rows(source, blocks, ids),
        invalid=validity.invalid(source),
    )


def _key(source: Source, alias: str = "c", *, bare: bool = False) -> sql.Composable:
    """The customer's key (segmentation.source.customer_keys) of a source row aliased `alias`.
    bare: an integer id as it is, not cast, so that an index on it serves a range or min/max."""
    column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(source.id_column))
    return column if bare and source.id_type is None else customer_keys.key(column, source.id_type)


def id_bounds(conn: psycopg.Connection, source: Source) -> tuple[int, int] | None:
    """The smallest and largest key in the source, None when it has none: an index's ends for an
    integer id, a scan for ids keyed by hash."""
    row = conn.execute(
        sql.SQL("SELECT min({key})::bigint, max({key})::bigint FROM {table} AS c").format(
            key=_key(source, bare=True), table=source.table.identifier()
        )
    ).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
