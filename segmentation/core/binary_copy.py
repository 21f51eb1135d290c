"""PostgreSQL's binary COPY format to and from numpy, without per-row Python objects.

The flow selects only NOT NULL, fixed-width columns (bigint, integer, smallint, double
precision), so every row has the same byte layout and a whole block of rows decodes with
one numpy view. See https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no extension
TRAILER = b"\xff\xff"

# Field types by PostgreSQL type name.
WIRE_TYPES = {"int8": ">i8", "int4": ">i4", "int2": ">i2", "float8": ">f8"}


def row_dtype(fields: Sequence[tuple[str, str]]) -> np.dtype:
    """The on-wire layout of one row: a field count, then a length and a value per field."""
    layout: list[tuple[str, str]] = [("_nfields", ">i2")]
    for name, pg_type in fields:
        layout.append((f"_len_{name}", ">i4"))
        layout.append((name, WIRE_TYPES[pg_type]))
    return np.dtype(layout)


class Decoder:
    """Feed it the bytes of a COPY ... TO STDOUT (FORMAT BINARY) in any pieces; it returns
    the complete rows seen so far as native-endian arrays, one per field."""

    def __init__(self, fields: Sequence[tuple[str, str]]):
        self.fields = list(fields)
        self.dtype = row_dtype(self.fields)
        self._pending = b""
        self._header_done = False
        self._finished = False

    def feed(self, data: bytes | bytearray) -> dict[str, np.ndarray]:
        buf = self._pending + data if self._pending else data
        start = 0
        if not self._header_done:
            if len(buf) < 19:
                self._pending = bytes(buf)
                return self._empty()
            if buf[:11] != SIGNATURE:
                raise ValueError("not a PostgreSQL binary COPY stream")
            ext = int.from_bytes(buf[15:19], "big")
            start = 19 + ext
            self._header_done = True
        size = self.dtype.itemsize
        body = len(buf) - start
        if body == 2 and buf[start : start + 2] == TRAILER:
            self._finished = True
            self._pending = b""
            return self._empty()
        n = body // size
        rows = np.frombuffer(buf, dtype=self.dtype, count=n, offset=start)
        rest = buf[start + n * size :]
        if rest == TRAILER:
            self._finished = True
            rest = b""
        self._pending = bytes(rest)
        self._check(rows)
        return {name: rows[name].astype(rows.dtype[name].newbyteorder("=")) for name, _ in self.fields}

    def finish(self) -> None:
        if self._pending:
            raise ValueError(f"binary COPY stream ended inside a row ({len(self._pending)} bytes left)")

    def _check(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        if np.any(rows["_nfields"] != len(self.fields)):
            raise ValueError("binary COPY row has an unexpected number of fields")
        for name, _ in self.fields:
            if np.any(rows[f"_len_{name}"] != rows.dtype[name].itemsize):
                raise ValueError(f"binary COPY field {name} is NULL or not of the expected type")

    def _empty(self) -> dict[str, np.ndarray]:
        return {name: np.empty(0, dtype=np.dtype(WIRE_TYPES[t]).newbyteorder("=")) for name, t in self.fields}


def encode_rows(fields: Sequence[tuple[str, str]], columns: dict[str, np.ndarray]) -> bytes:
    """The row bytes (no header or trailer) for the given equally long columns."""
    dtype = row_dtype(fields)
    n = len(columns[fields[0][0]])
    rows = np.empty(n, dtype=dtype)
    rows["_nfields"] = len(fields)
    for name, _ in fields:
        rows[f"_len_{name}"] = dtype[name].itemsize
        rows[name] = columns[name]
    return rows.tobytes()
