"""COPY ... TO STDOUT read in large pieces.

PostgreSQL sends one protocol message per row. psycopg's Copy.read() spends about a
microsecond of Python on each, which at millions of rows costs as much as the query itself.
Here libpq's own buffer is drained directly, and the socket is waited on only when nothing
is buffered; everything else (the connection, its transaction, errors) stays psycopg's."""

from __future__ import annotations

import selectors
from collections.abc import Iterator

import psycopg
from psycopg import pq, sql


def copy_out(conn: psycopg.Connection, query: sql.Composable, piece_bytes: int) -> Iterator[bytearray]:
    """The data of a COPY ... TO STDOUT query in pieces of at least piece_bytes (the last
    may be smaller). Nothing else may use conn until the iterator is exhausted or closed."""
    if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        # psycopg opens its implicit transaction before a statement; libpq does not, and the
        # COPY must run inside it (the caller's snapshot, the caller's rollback).
        conn.execute("SELECT 1")
    pgconn = conn.pgconn
    with conn.lock, selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ)

        def wait() -> None:
            selector.select()  # releases the GIL while the socket is quiet
            pgconn.consume_input()

        def next_result() -> pq.abc.PGresult | None:
            while pgconn.is_busy():
                wait()
            return pgconn.get_result()

        def drain() -> None:
            while next_result() is not None:
                pass

        pgconn.send_query(query.as_bytes(conn))
        result = next_result()
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            drain()
            raise _error(result, conn, "COPY did not start")
        done = False
        try:
            buf = bytearray()
            while True:
                n, data = pgconn.get_copy_data(1)
                if n > 0:
                    buf += data
                    if len(buf) >= piece_bytes:
                        yield buf
                        buf = bytearray()
                elif n == 0:
                    wait()
                elif n == -1:
                    break
                else:
                    raise psycopg.OperationalError(f"COPY failed: {_message(pgconn)}")
            done = True
            result = next_result()
            drain()
            if result is None or result.status != pq.ExecStatus.COMMAND_OK:
                raise _error(result, conn, "COPY failed")
            if buf:
                yield buf
        finally:
            if not done and pgconn.status == pq.ConnStatus.OK:
                # Closed early or failed mid-way: stop the server and read to the end, so the
                # connection is left usable (its transaction aborted) for the caller's
                # rollback. Best effort: if this fails too, the original error is the one that
                # matters, and the caller closes the connection.
                try:
                    conn.cancel_safe(timeout=10)
                    while (n := pgconn.get_copy_data(1)[0]) >= 0:
                        if n == 0:
                            wait()
                    drain()
                except (psycopg.Error, OSError):
                    pass


def _message(pgconn: pq.abc.PGconn) -> str:
    return pgconn.get_error_message().strip()


def _error(result: pq.abc.PGresult | None, conn: psycopg.Connection, what: str) -> psycopg.Error:
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        return psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if result is not None:
        return psycopg.ProgrammingError(
            f"{what}: the query is not a COPY ... TO STDOUT (it gave {pq.ExecStatus(result.status).name})"
        )
    return psycopg.OperationalError(f"{what}: {_message(conn.pgconn) or 'no result from the server'}")
