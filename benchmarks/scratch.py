"""A scratch database for a benchmark: created on the given server (empty, or with generated
customers), dropped afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from segmentation import dburl


def drop(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(server: str, name: str) -> Iterator[str]:
    """Yields the URL of a new, empty database `name` (one left by an earlier run is dropped first)."""
    drop(server, name)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield dburl.replace(server, dbname=name)
    finally:
        drop(server, name)


@contextmanager
def customers_database(server: str, name: str, rows: int, seed: int = 1) -> Iterator[str]:
    """scratch_database with the schema and `rows` generated customers, vacuumed and analysed."""
    from segmentation import migrations
    from segmentation.loading import generate_customers

    with scratch_database(server, name) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.upgrade(conn)
            started = time.perf_counter()
            generate_customers(conn, rows, seed=seed)
            print(f"generated {rows:,} customers in {time.perf_counter() - started:.1f} s", flush=True)
            conn.execute("VACUUM ANALYZE public.customers")
        yield url
