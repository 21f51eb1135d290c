"""Reading the valid rows over two sessions must give exactly what one scan gives, in the
same snapshot, and fall back to one scan where the table cannot be split."""

import numpy as np
import psycopg
import pytest

from segmentation.source import split_read
from segmentation.source.catalog import resolve_source
from segmentation.source.stream import stream_valid

FEATURES = ["gender", "age", "annual_income", "spending_score"]


def _snapshot(url):
    conn = psycopg.connect(url)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return conn


def _read(chunks):
    chunks = list(chunks)
    return (
        np.concatenate([c.ids for c in chunks]),
        np.concatenate([c.X for c in chunks]),
        np.concatenate([c.gender for c in chunks]),
    )


def _make_customers(conn, n=6000):
    conn.execute(
        "CREATE TABLE many (customer_id bigint PRIMARY KEY, gender text, age int, annual_income numeric, spending_score int)"
    )
    conn.execute(
        """INSERT INTO many
           SELECT i, CASE WHEN i %% 3 = 0 THEN 'Female' WHEN i %% 3 = 1 THEN 'Male' ELSE 'other' END,
                  18 + i %% 60, (i %% 137) + 0.5, CASE WHEN i %% 11 = 0 THEN 0 ELSE 1 + i %% 100 END
           FROM generate_series(1, %s) AS i""",
        (n,),
    )
    # Updated rows move to the end of the table: the physical order is no longer the id order.
    conn.execute("UPDATE many SET age = age + 1 WHERE customer_id % 7 = 0")


class Connects:
    def __init__(self, url):
        self.url, self.opened = url, []

    def __call__(self):
        conn = psycopg.connect(self.url)
        self.opened.append(conn)
        return conn


def test_two_sessions_read_exactly_what_one_scan_reads_in_the_same_order(conn, database_url):
    _make_customers(conn)
    snapshot = _snapshot(database_url)
    source = resolve_source(snapshot, "public.many", "customer_id", FEATURES)
    assert split_read.split_point(snapshot, source) > 0
    connects = Connects(database_url)
    one = _read(stream_valid(snapshot, source, 97))
    two = _read(split_read.stream_valid_split(snapshot, source, 97, connects, min_rows=0, n_rows=6000))
    for a, b in zip(one, two):
        assert np.array_equal(a, b)
    # 1 in 3 has gender 'other' and 1 in 11 a spending score of 0: invalid, left out.
    expected = [i for i in range(1, 6001) if i % 3 != 2 and i % 11 != 0]
    assert sorted(two[0].tolist()) == expected
    assert len(connects.opened) == 1 and connects.opened[0].closed
    snapshot.close()


def test_the_second_session_reads_the_run_snapshot_not_later_changes(conn, database_url):
    _make_customers(conn)
    snapshot = _snapshot(database_url)
    source = resolve_source(snapshot, "public.many", "customer_id", FEATURES)
    before = _read(stream_valid(snapshot, source, 500))
    # Committed after the snapshot was taken: neither half may see it.
    conn.execute("DELETE FROM many WHERE customer_id <= 3000")
    conn.execute("INSERT INTO many SELECT i, 'Male', 30, 50, 50 FROM generate_series(10001, 13000) AS i")
    after = _read(split_read.stream_valid_split(snapshot, source, 500, Connects(database_url), min_rows=0, n_rows=6000))
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    snapshot.close()


def test_sources_that_cannot_be_split_are_read_in_one_scan(conn, database_url):
    _make_customers(conn)
    conn.execute("CREATE VIEW many_view AS SELECT * FROM many")
    conn.execute("CREATE TABLE many_copy AS SELECT * FROM many")  # no unique id

    def no_second_session():
        raise AssertionError("a second session was opened")

    snapshot = _snapshot(database_url)
    for table in ("public.many_view", "public.many_copy"):
        source = resolve_source(snapshot, table, "customer_id", FEATURES)
        assert split_read.split_point(snapshot, source) is None
        one = _read(stream_valid(snapshot, source, 97))
        split = _read(split_read.stream_valid_split(snapshot, source, 97, no_second_session, min_rows=0, n_rows=6000))
        for a, b in zip(one, split):
            assert np.array_equal(np.sort(a, axis=0), np.sort(b, axis=0))
    # Nor is a read outside one snapshot: each half would see its own.
    committed = psycopg.connect(database_url)
    assert split_read.split_point(committed, resolve_source(committed, "public.many", "customer_id", FEATURES)) is None
    committed.close()
    # A table smaller than min_rows is not worth a second session either.
    source = resolve_source(snapshot, "public.many", "customer_id", FEATURES)
    assert len(
        _read(split_read.stream_valid_split(snapshot, source, 97, no_second_session, min_rows=10_000, n_rows=6000))[0]
    )
    snapshot.close()


def test_a_failing_second_half_fails_the_read_and_closes_its_session(conn, database_url, monkeypatch):
    _make_customers(conn)
    snapshot = _snapshot(database_url)
    source = resolve_source(snapshot, "public.many", "customer_id", FEATURES)
    real = split_read.valid_copy_query

    def broken_second_half(source, blocks=None):
        if blocks is not None and blocks[0] > 0:
            return psycopg.sql.SQL("COPY (SELECT 1/0) TO STDOUT (FORMAT BINARY)")
        return real(source, blocks)

    monkeypatch.setattr(split_read, "valid_copy_query", broken_second_half)
    connects = Connects(database_url)
    with pytest.raises(psycopg.errors.DivisionByZero):
        _read(split_read.stream_valid_split(snapshot, source, 97, connects, min_rows=0, n_rows=6000))
    assert connects.opened[0].closed
    snapshot.close()
