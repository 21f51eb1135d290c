"""One range of ids of a run's pass over the source, where a Dask worker runs it: the owner of
the range's connections. The range's valid rows are read in the run's exported snapshot (the
run holds that snapshot open until every range is done).

The scoring pass also writes the range's assignments into the run's table, in one transaction
of its own, which replaces whatever an earlier write of the range left: a range written twice
(a task run again after its worker died, PrefectHQ/prefect #15442) leaves its customers once
(segmentation.store.partitions.AssignmentWriter). The table is not attached yet, so BI sees
none of it. With the previous run to compare with, the range's rows are compared with that
run's there as they are written (segmentation.core.comparison), and the changes go back to
the flow for the drift.

The database URL comes from the worker's own settings (its environment or the Prefect Secret
block named there), never from the task's parameters. With a multi-host URL, a worker may
reach another server than the run's after a failover: given the run's server
(segmentation.db.server_identity), its sessions check they reached that one, and the range
fails otherwise (db.ServerChanged) rather than read or write elsewhere."""

from __future__ import annotations

import os
from collections.abc import Iterator

from psycopg import sql

from segmentation import db
from segmentation.passes import Centroids, ScoredPart, score_part
from segmentation.settings import Settings
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange, valid_copy_query
from segmentation.source.stream import Chunk, stream_valid
from segmentation.store import history
from segmentation.store.history import PreviousRun
from segmentation.store.partitions import AssignmentWriter


def _session_name() -> str:
    return f"segmentation-range-{os.getpid()}"  # which worker process holds the session


def read_range(
    snapshot: str, source: Source, ids: IdRange, chunk_rows: int, server: str | None = None
) -> Iterator[Chunk]:
    """The range's valid rows, chunk by chunk, in the run's snapshot, on the run's server."""
    url = db.database_url(Settings.from_env())
    with db.connect_snapshot(url, application_name=_session_name(), server=server) as reader:
        reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        yield from stream_valid(reader, source, chunk_rows, valid_copy_query(source, ids=ids))
        reader.rollback()


def score_range(
    run_id: int,
    snapshot: str,
    source: Source,
    part: tuple[int, IdRange],
    chunk_rows: int,
    centroids: Centroids,
    compare_with: PreviousRun | None = None,
    server: str | None = None,
) -> ScoredPart:
    """The scoring pass's work (segmentation.passes.score_part) on the range's valid rows,
    written in one transaction; with compare_with, compared with that run's rows there.
    part: the range's number in the run's list of ranges, and its ids; server: the run's."""
    url = db.database_url(Settings.from_env())
    stats = centroids.stats()
    with db.connect(url, application_name=_session_name(), server=server) as conn, conn.transaction():
        comparison = None if compare_with is None else history.range_comparison(conn, compare_with, part[1])
        with AssignmentWriter(conn, run_id, part, comparison=comparison) as writer:
            return score_part(read_range(snapshot, source, part[1], chunk_rows, server), writer, centroids, stats)
