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
    pgconn = conn.pgconn
    with conn.lock, selectors.DefaultSelector() as selector:
        selector.register(pgconn.socket, selectors.EVENT_READ)

        def wait() -> None:
            selector.select()
            pgconn.consume_input()

        pgconn.send_query(query.as_bytes(conn))
        while pgconn.is_busy():
            wait()
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            _drain(pgconn)
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
            while pgconn.is_busy():
                wait()
            result = pgconn.get_result()
            _drain(pgconn)
            if result is None or result.status != pq.ExecStatus.COMMAND_OK:
                raise _error(result, conn, "COPY failed")
            if buf:
                yield buf
        finally:
            if not done and pgconn.status == pq.ConnStatus.OK:
                # Closed early or failed mid-way: stop the server and leave the connection
                # usable (its transaction aborted) for the caller's rollback.
                conn.cancel_safe()
                while pgconn.get_copy_data(0)[0] >= 0:
                    pass
                _drain(pgconn)


def _drain(pgconn: pq.abc.PGconn) -> None:
    while pgconn.get_result() is not None:
        pass


def _message(pgconn: pq.abc.PGconn) -> str:
    return pgconn.get_error_message().decode("utf-8", "replace").strip()


def _error(result: pq.abc.PGresult | None, conn: psycopg.Connection, what: str) -> psycopg.Error:
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        return psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    return psycopg.OperationalError(f"{what}: {_message(conn.pgconn)}")
