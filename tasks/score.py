"""Assigning every customer of the snapshot to a segment and writing the assignments: in this
process, or on Dask (SEGMENTATION_DASK_ADDRESS or SEGMENTATION_DASK_WORKERS) as one Prefect
task per range of ids, each reading and writing its range itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.model import assign
from segmentation.core.progress import Progress
from segmentation.core.segment_stats import SegmentStats
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange
from segmentation.source.stream import Chunk
from segmentation.store import range_pass
from segmentation.store.history import PreviousRun
from segmentation.store.run import Run
from segmentation.tasks.dask import Cluster
from segmentation.tasks.extract import TrainingSet
from segmentation.tasks.model import TrainedModel


def _chunks(run: Run, source: Source, training: TrainingSet) -> Iterator[Chunk]:
    size = run.settings.chunk_rows
    if training.complete:  # everything is in memory already: no second read
        for start in range(0, len(training.ids), size):
            stop = start + size
            yield Chunk(training.ids[start:stop], training.X[start:stop], training.gender[start:stop])
    else:
        yield from run.read_valid(source)


def score(
    run: Run,
    source: Source,
    training: TrainingSet,
    model: TrainedModel,
    segment_ids: np.ndarray,
    previous: PreviousRun | None,
    cluster: Cluster,
) -> SegmentStats:
    """The scoring pass: the score task, in this process; or, when the training set is a sample
    and Dask is set, a score-range task per range of ids on Dask, submitted from the flow run
    (a task's parameters travel with what it submits, and a Run's connections cannot). In this
    process, each chunk is also compared with the previous run on the same table, for the drift."""
    if cluster.enabled and not training.complete:
        stats = _score_on_dask(run, source, training, model, segment_ids, cluster)
    else:
        same_table = previous is not None and previous.same_table(str(source.table))
        stats = score_here(run, source, training, model, segment_ids, previous if same_table else None)
    if stats.n_customers != training.n_valid:
        raise RuntimeError(f"scored {stats.n_customers} customers but the snapshot has {training.n_valid}")
    get_run_logger().info("score: %s customers assigned to %d segments", f"{stats.n_customers:,}", model.k)
    return stats


@task(name="score", cache_policy=NO_CACHE)
def score_here(
    run: Run,
    source: Source,
    training: TrainingSet,
    model: TrainedModel,
    segment_ids: np.ndarray,
    compare_with: PreviousRun | None = None,
) -> SegmentStats:
    """Stream chunk by chunk: assign, write with COPY, and accumulate the segment figures,
    so memory is bounded by the chunk and the training set, not by the table."""
    logger = get_run_logger()
    stats = SegmentStats(model.k, source.features, segment_ids)
    progress = Progress("score", "customers assigned", training.n_valid, start=time.monotonic())
    with run.assignments(compare_with) as writer:
        for chunk in _chunks(run, source, training):
            writer.write(chunk.ids, *_assign(model, segment_ids, stats, chunk))
            if line := progress.update(writer.rows, time.monotonic()):
                logger.info(line)
        run.end_snapshot()  # the last read of the source is done
    return stats


def _score_on_dask(
    run: Run, source: Source, training: TrainingSet, model: TrainedModel, segment_ids: np.ndarray, cluster: Cluster
) -> SegmentStats:
    """One score-range task per range of ids, at most SEGMENTATION_DASK_SESSIONS (default: one
    per worker) at a time, since each holds two database sessions. The first failure fails the
    pass, and the run's table is never attached."""
    logger = get_run_logger()
    stats = SegmentStats(model.k, source.features, segment_ids)
    ranges = cluster.ranges(run.id_bounds(source))
    progress = Progress("score", "customers assigned", training.n_valid, start=time.monotonic())
    logger.info(
        "score: %d ranges of ids on %d Dask workers, %d at a time", len(ranges), cluster.workers, cluster.sessions
    )
    with run.assignments_by_range() as snapshot:
        parameters = [
            {
                "run_id": run.run_id,
                "snapshot": snapshot,
                "source": source,
                "part": part,
                "model": model,
                "segment_ids": segment_ids,
                "chunk_rows": run.settings.chunk_rows,
            }
            for part in enumerate(ranges)
        ]
        for range_stats in cluster.map(score_range, parameters):
            stats.merge(range_stats)
            if line := progress.update(stats.n_customers, time.monotonic()):
                logger.info(line)
    run.end_snapshot()
    return stats


@task(name="score-range", cache_policy=NO_CACHE)
def score_range(
    run_id: int,
    snapshot: str,
    source: Source,
    part: tuple[int, IdRange],
    model: TrainedModel,
    segment_ids: np.ndarray,
    chunk_rows: int,
) -> SegmentStats:
    """On a Dask worker: the range's customers assigned and written (segmentation.store.
    range_pass), and their segment figures for the run to merge. part: the range's number
    and ids."""
    stats = SegmentStats(model.k, source.features, segment_ids)
    range_pass.write_range(
        run_id, snapshot, source, part, chunk_rows, lambda chunk: _assign(model, segment_ids, stats, chunk)
    )
    return stats


def _assign(
    model: TrainedModel, segment_ids: np.ndarray, stats: SegmentStats, chunk: Chunk
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's published segment ids and distances, its figures added to stats: the same in
    this process and on a worker."""
    labels, distances = assign(model.centers, model.scaler.transform(chunk.X))
    stats.update(labels, chunk.X, chunk.gender)
    return segment_ids[labels].astype(np.int32), distances
