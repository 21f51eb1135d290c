"""The valid rows of a source, decoded from binary COPY straight into numpy, chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.binary_copy import Decoder
from segmentation.source.catalog import Source
from segmentation.source.copy_out import copy_out
from segmentation.source.queries import RULE_FIELD, feature_fields, input_field, valid_copy_query


@dataclass
class Chunk:
    ids: np.ndarray  # int64
    X: np.ndarray  # float64, (n, features), original units
    gender: np.ndarray  # int16 codes
    rule: np.ndarray | None = None  # int16: the missing-value segment (0: clustered); None: the run has none

    def __len__(self) -> int:
        return len(self.ids)


def stream_valid(
    conn: psycopg.Connection, source: Source, chunk_rows: int, query: sql.Composable | None = None
) -> Iterator[Chunk]:
    """The valid rows (of valid_copy_query(source) unless given) in chunks of about
    chunk_rows."""
    decoder = Decoder(feature_fields(source))
    target = max(1, chunk_rows) * decoder.dtype.itemsize
    for piece in copy_out(conn, query if query is not None else valid_copy_query(source), target):
        columns = decoder.feed(piece)
        if len(columns["customer_id"]):
            X = np.column_stack([columns[input_field(j)] for j in range(len(source.inputs))])
            yield Chunk(columns["customer_id"], X, columns["gender_code"], columns.get(RULE_FIELD))
    decoder.finish()
