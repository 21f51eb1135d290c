"""PostgreSQL's binary COPY format to and from numpy, without per-row Python objects.

The flow selects only NOT NULL, fixed-width columns (bigint, integer, smallint, double
precision), so every row has the same byte layout and a whole block of rows decodes with
one numpy view. See https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4

Encoding also takes the types a generated CRM table needs (encode_rows): boolean, date,
timestamptz, numeric(12,2) and text. Each is sent in a fixed width, text padded to its
column's longest value, and the padding is cut out of the rows' bytes in one step.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # no flags, no extension
TRAILER = b"\xff\xff"

# Field types by PostgreSQL type name.
WIRE_TYPES = {"int8": ">i8", "int4": ">i4", "int2": ">i2", "float8": ">f8"}

# Dates and timestamps are sent as days and microseconds since this instant (UTC).
PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
# numeric(12,2) as PostgreSQL's numeric_send writes it, always with four base-10000 digits:
# 10^8, 10^4 and 1 (weight 2), then the fraction (cents times 100). Leading and trailing
# zero digits are allowed; the server strips them.
NUMERIC_12_2 = np.dtype(
    [("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">i2"), ("dscale", ">i2"), ("digits", ">i2", (4,))]
)
_NUMERIC_NEGATIVE = 0x4000
_CENTS_LIMIT = 10**12  # numeric(12,2) holds less than 10^10


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


def _numeric_12_2(amounts: np.ndarray) -> np.ndarray:
    cents = np.rint(np.asarray(amounts, dtype=np.float64) * 100)
    if not np.all(np.abs(cents) < _CENTS_LIMIT):  # NaN too
        raise ValueError("a numeric(12,2) value is missing or out of its range")
    whole, hundredths = np.divmod(np.abs(cents).astype(np.int64), 100)
    values = np.empty(len(cents), dtype=NUMERIC_12_2)
    values["ndigits"], values["weight"], values["dscale"] = 4, 2, 2
    values["sign"] = np.where(cents < 0, _NUMERIC_NEGATIVE, 0)
    values["digits"] = np.stack([whole // 10**8, whole // 10**4 % 10**4, whole % 10**4, hundredths * 100], axis=1)
    return values


def _on_wire(pg_type: str, column: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    """The field's on-wire type and the values to store in it."""
    if pg_type in WIRE_TYPES:
        return np.dtype(WIRE_TYPES[pg_type]), column
    if pg_type == "bool":
        return np.dtype("?"), column
    if pg_type == "date":
        return np.dtype(">i4"), (column.astype("datetime64[D]") - PG_EPOCH.astype("datetime64[D]")).astype(np.int64)
    if pg_type == "timestamptz":  # a naive datetime64 is taken as UTC
        return np.dtype(">i8"), (column.astype("datetime64[us]") - PG_EPOCH).astype(np.int64)
    if pg_type == "numeric(12,2)":
        return NUMERIC_12_2, _numeric_12_2(column)
    if pg_type == "text":
        values = column if column.dtype.kind == "S" else np.strings.encode(column, "utf-8")
        return values.dtype, values
    raise ValueError(f"binary COPY of {pg_type} is not supported")


def encode_rows(
    fields: Sequence[tuple[str, str]], columns: dict[str, np.ndarray], nullable: Collection[str] = ()
) -> bytes:
    """The row bytes (no header or trailer) for the given equally long columns. Types: those
    of WIRE_TYPES; bool; date and timestamptz from datetime64; numeric(12,2) from amounts,
    rounded to the cent; text from strings or bytes (dtype U or S), none NULL. A float8 field
    named in `nullable` is sent NULL where it is NaN (a chunk without NaN costs one check)."""
    wire = {name: _on_wire(pg_type, columns[name]) for name, pg_type in fields}
    nulls = {
        name: missing
        for name, pg_type in fields
        if name in nullable and pg_type == "float8" and (missing := np.isnan(columns[name])).any()
    }
    layout: list[tuple[str, np.dtype | str]] = [("_nfields", ">i2")]
    for name, _ in fields:
        layout += [(f"_len_{name}", ">i4"), (name, wire[name][0])]
    dtype = np.dtype(layout)
    offsets = dtype.fields
    assert offsets is not None  # a structured dtype
    n = len(columns[fields[0][0]])
    rows = np.empty(n, dtype=dtype)
    rows["_nfields"] = len(fields)
    padded = []  # (offset in the row, width, each value's length) of the text and NULL fields
    for name, pg_type in fields:
        field_type, values = wire[name]
        if pg_type == "text":
            lengths = np.strings.str_len(values)
            rows[f"_len_{name}"] = lengths
            padded.append((offsets[name][1], field_type.itemsize, lengths))
        elif name in nulls:  # a NULL is its length -1 and no value bytes
            rows[f"_len_{name}"] = np.where(nulls[name], -1, field_type.itemsize)
            padded.append((offsets[name][1], field_type.itemsize, np.where(nulls[name], 0, field_type.itemsize)))
        else:
            rows[f"_len_{name}"] = field_type.itemsize
        rows[name] = values
    if not padded:
        return rows.tobytes()
    keep = np.ones((n, dtype.itemsize), dtype=bool)
    for offset, width, lengths in padded:
        keep[:, offset : offset + width] = np.arange(width) < lengths[:, None]
    return rows.view(np.uint8).reshape(n, dtype.itemsize)[keep].tobytes()
