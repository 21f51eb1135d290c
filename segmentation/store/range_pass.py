"""One range of ids of a run's scoring pass, where a Dask worker runs it: the owner of the
range's two connections. It reads the range's valid rows in the run's exported snapshot
(the run holds that snapshot open until every range is done) and writes their assignments
into the run's table in one transaction of its own, which first deletes whatever the range
already wrote: a range run twice (a task retried after its worker died, PrefectHQ/prefect
#15442) leaves its customers once. The table is not attached yet, so BI sees none of it.

The database URL comes from the worker's own settings (its environment or the Prefect Secret
block named there), never from the task's parameters."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from psycopg import sql

from segmentation import db
from segmentation.settings import Settings
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange, valid_copy_query
from segmentation.source.stream import Chunk, stream_valid
from segmentation.store.partitions import AssignmentWriter

# A chunk's segment ids and distances, from its rows.
Assign = Callable[[Chunk], tuple[np.ndarray, np.ndarray]]


def write_range(run_id: int, snapshot: str, source: Source, ids: IdRange, chunk_rows: int, assign: Assign) -> int:
    """Score the range's valid rows chunk by chunk and write them; returns how many."""
    url = db.database_url(Settings.from_env())
    name = f"segmentation-range-{os.getpid()}"  # which worker process holds the session
    with (
        db.connect_snapshot(url, application_name=name) as reader,
        db.connect(url, application_name=name) as conn,
    ):
        reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        with conn.transaction(), AssignmentWriter(conn, run_id, ids) as writer:
            for chunk in stream_valid(reader, source, chunk_rows, valid_copy_query(source, ids=ids)):
                writer.write(chunk.ids, *assign(chunk))
        reader.rollback()
        return writer.rows
