"""A customer's key: the one rule for the 64-bit number a run keys a customer by, whatever the
type of the source's id column (sql/018_customer_ids.sql).

- An integer id (smallint, integer, bigint) is its own key.
- A text, varchar, char or uuid id is keyed by hashtextextended(id::text, 0), PostgreSQL's own
  64-bit hash, computed in the row as the source is read: no pass over the source joins anything.
  segmentation.customer_ids maps each key back to its id, for the BI views (record_ids), and a
  run whose ids share a key stops before it writes anything.

The run's reads (segmentation.source.queries), its record of ids (record_ids), an erasure
(segmentation.purge) and a sample of rows read back (segmentation.store.readback) all take the
key from `key`, so they agree by construction.

Runs in its caller's transaction: the run's (segmentation.store.run) for record_ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import psycopg
from psycopg import sql

from segmentation.db import scalar
from segmentation.errors import SegmentationError

INTEGER_TYPES = frozenset({"int2", "int4", "int8"})
HASHED_TYPES = frozenset({"text", "varchar", "bpchar", "uuid"})
ID_TYPES = INTEGER_TYPES | HASHED_TYPES
# What format_type() prints for the hashed types: text, uuid, character varying(32), character(8).
_TYPE_NAME = re.compile(r"^(text|uuid|character varying|character)(\(\d+\))?$")


def key(id_value: sql.Composable, id_type: str | None) -> sql.Composable:
    """The key of an id (a column, a parameter) of a source whose ids are of id_type (None: integer)."""
    if id_type is None:
        return sql.SQL("({})::bigint").format(id_value)
    return sql.SQL("hashtextextended(({})::text, 0)").format(id_value)


def type_name(id_type: str) -> sql.SQL:
    """A hashed id type as SQL, to cast an id back to: only the names format_type() gives them."""
    if _TYPE_NAME.fullmatch(id_type) is None:
        raise ValueError(f"{id_type!r} is not an id type that is keyed by hash")
    return sql.SQL(id_type)


def as_source(recorded: sql.Composable, id_type: str) -> sql.Composable:
    """A recorded id (segmentation.customer_ids.customer_id, text) in the source's type: what the
    BI views of customers give as customer_id, and so what a filter on it compares
    (ensure_lookup_index indexes this very expression)."""
    return sql.SQL("({})::{}").format(recorded, type_name(id_type))


def ensure_lookup_index(conn: psycopg.Connection, segmentation: str, id_type: str) -> None:
    """The index that finds a customer by id through the BI views (WHERE customer_id = ...): on
    the segmentation's partition, on the id as the views give it (as_source), one per id type.
    Without it such a lookup read the whole run, key by key (430 ms at 300,000 customers, 0.4 ms
    with it). Hash, not btree: only equality is looked up, and it is built from 4-byte hash codes,
    not by sorting text. Created once; IF NOT EXISTS makes every later call a catalog lookup."""
    name = f"customer_ids_{segmentation}_by_{hashlib.md5(id_type.encode()).hexdigest()[:8]}"
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hash (({}))").format(
            sql.Identifier(name), partition(segmentation), as_source(sql.Identifier("customer_id"), id_type)
        )
    )


def partition(segmentation: str) -> sql.Identifier:
    """A segmentation's partition of segmentation.customer_ids (sql/018)."""
    return sql.Identifier("segmentation", f"customer_ids_{segmentation}")


def record_ids(
    conn: psycopg.Connection,
    segmentation: str,
    rows: sql.Composable,
    id_column: str,
    id_type: str,
    *,
    unique: bool,
) -> int:
    """Record in segmentation.customer_ids the ids of `rows` (the source, as the run reads it)
    not there yet, and return how many were new. Stops, in one line, when two ids share a key,
    which 64-bit hashes make rare (about one chance in 400,000 at 10 million customers)."""
    column = sql.SQL("s.{}").format(sql.Identifier(id_column))
    arrived = sql.SQL(
        "SELECT {distinct}{key} AS customer_key, ({column})::text AS customer_id FROM ({rows}) AS s "
        "WHERE {column} IS NOT NULL"
    ).format(
        distinct=sql.SQL("" if unique else "DISTINCT "),
        key=key(column, id_type),
        column=column,
        rows=rows,
    )
    table = partition(segmentation)
    if scalar(conn, "SELECT to_regclass(%s) IS NULL", (table.as_string(conn),)):
        # The segmentation's first ids: its partition filled with no index, then indexed (a sort,
        # not ten million inserts into a btree), then attached; its CHECK spares the attach a scan.
        # Two ids with one key are then the index's unique violation.
        conn.execute(
            sql.SQL("CREATE TABLE {table} (LIKE segmentation.customer_ids, CHECK (segmentation = {name}))").format(
                table=table, name=sql.Literal(segmentation)
            )
        )
        added = conn.execute(
            sql.SQL("INSERT INTO {table} SELECT %s, a.customer_key, a.customer_id FROM ({arrived}) AS a").format(
                table=table, arrived=arrived
            ),
            (segmentation,),
        ).rowcount
        try:
            with conn.transaction():  # a savepoint: the violation is reported in one line below
                # As for the run's own key (partitions.add_key): the sort in memory up to about 5
                # million keys rather than spilled to disk past 64MB (the default).
                conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (customer_key)").format(table))
        except psycopg.errors.UniqueViolation:
            first, second = _collision(conn, segmentation, arrived)
            raise SegmentationError(_collided(first, second)) from None
        ensure_lookup_index(conn, segmentation, id_type)
        conn.execute(
            sql.SQL("ALTER TABLE segmentation.customer_ids ATTACH PARTITION {} FOR VALUES IN ({})").format(
                table, sql.Literal(segmentation)
            )
        )
        return int(added)
    new, added = conn.execute(
        sql.SQL(
            """WITH arrived AS MATERIALIZED (
                   SELECT a.* FROM ({arrived}) AS a
                   WHERE NOT EXISTS (SELECT FROM segmentation.customer_ids AS m
                                     WHERE m.segmentation = %(segmentation)s AND m.customer_key = a.customer_key
                                       AND m.customer_id = a.customer_id)),
                    added AS (
                   INSERT INTO {table} (segmentation, customer_key, customer_id)
                   SELECT %(segmentation)s, customer_key, customer_id FROM arrived
                   ON CONFLICT DO NOTHING RETURNING 1)
               SELECT (SELECT count(*) FROM arrived), (SELECT count(*) FROM added)"""
        ).format(arrived=arrived, table=table),
        {"segmentation": segmentation},
    ).fetchone() or (0, 0)
    if new != added:
        first, second = _collision(conn, segmentation, arrived)
        raise SegmentationError(_collided(first, second))
    ensure_lookup_index(conn, segmentation, id_type)
    return int(added)


def record_arrivals(
    conn: psycopg.Connection,
    segmentation: str,
    rows: sql.Composable,
    id_column: str,
    id_type: str,
    keys: Sequence[int],
) -> int:
    """record_ids for a run that knows which of its keys are new: those not in the run it compared
    itself with, whose ids are all recorded. Only the rows with those keys are looked up (one scan
    of the source, hashing each id, joined with the new keys), not every id against every
    recorded one. A new id whose key is recorded for another id, or that shares its key with
    another new id, stops the run in one line; an id that comes back is recorded already."""
    column = sql.SQL("s.{}").format(sql.Identifier(id_column))
    conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE arrived_ids ON COMMIT DROP AS "
            "SELECT DISTINCT n.key AS customer_key, ({column})::text AS customer_id "
            "FROM ({rows}) AS s JOIN unnest(%s::bigint[]) AS n(key) ON n.key = {key} WHERE {column} IS NOT NULL"
        ).format(column=column, rows=rows, key=key(column, id_type)),
        (list(keys),),
    )
    clash = conn.execute(
        """SELECT a.customer_id, b.customer_id FROM arrived_ids a JOIN arrived_ids b
             ON a.customer_key = b.customer_key AND a.customer_id < b.customer_id
           UNION ALL
           SELECT a.customer_id, m.customer_id FROM arrived_ids a JOIN segmentation.customer_ids m
             ON m.segmentation = %s AND m.customer_key = a.customer_key AND m.customer_id <> a.customer_id
           LIMIT 1""",
        (segmentation,),
    ).fetchone()
    if clash is not None:
        raise SegmentationError(_collided(str(clash[0]), str(clash[1])))
    ensure_lookup_index(conn, segmentation, id_type)
    return int(
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (segmentation, customer_key, customer_id) "
                "SELECT %s, customer_key, customer_id FROM arrived_ids ORDER BY customer_key ON CONFLICT DO NOTHING"
            ).format(partition(segmentation)),
            (segmentation,),
        ).rowcount
    )


def _collided(first: str, second: str) -> str:
    return (
        f"customer ids {first!r} and {second!r} have the same 64-bit key, which this job cannot tell apart; "
        "give one of them another id in the source"
    )


def _collision(conn: psycopg.Connection, segmentation: str, arrived: sql.Composable) -> tuple[str, str]:
    """Two ids with one key: among those arriving, or one arriving and one recorded before."""
    row = conn.execute(
        sql.SQL(
            """WITH arrived AS ({arrived})
               SELECT a.customer_id, b.customer_id FROM arrived a JOIN arrived b
                 ON a.customer_key = b.customer_key AND a.customer_id < b.customer_id
               UNION ALL
               SELECT a.customer_id, m.customer_id FROM arrived a JOIN segmentation.customer_ids m
                 ON m.segmentation = %s AND m.customer_key = a.customer_key AND m.customer_id <> a.customer_id
               LIMIT 1"""
        ).format(arrived=arrived),
        (segmentation,),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else ("?", "?")
