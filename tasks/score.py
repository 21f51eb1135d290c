"""Assigning every customer of the snapshot to a segment and writing the assignments: in this
process, or on Dask (SEGMENTATION_DASK_ADDRESS or SEGMENTATION_DASK_WORKERS) as one Prefect
task per range of ids, each reading and writing its range itself."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.model import assign
from segmentation.core.progress import Progress
from segmentation.core.ranges import id_ranges
from segmentation.core.segment_stats import SegmentStats
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange
from segmentation.source.stream import Chunk
from segmentation.store import range_pass
from segmentation.store.history import PreviousRun
from segmentation.store.run import Run
from segmentation.tasks.dask import task_runner
from segmentation.tasks.extract import TrainingSet
from segmentation.tasks.model import TrainedModel

RANGES_PER_WORKER = 4  # smaller ranges: less to redo when a worker dies, and an even finish


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
    previous: PreviousRun | None = None,
) -> SegmentStats:
    """The scoring pass: the score task, in this process; or, when the training set is a sample
    and Dask is set, a score-range task per range of ids on Dask, submitted from the flow run
    (a task's parameters travel with what it submits, and a Run's connections cannot). In this
    process, each chunk is also compared with the previous run on the same table, for the drift."""
    if run.settings.on_dask and not training.complete:
        stats = _score_on_dask(run, source, training, model, segment_ids)
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
    run: Run, source: Source, training: TrainingSet, model: TrainedModel, segment_ids: np.ndarray
) -> SegmentStats:
    """One score-range task per range of ids, at most SEGMENTATION_DASK_SESSIONS (default: one
    per worker) at a time, since each holds two database sessions. The first failure fails the
    pass: the ranges not started are cancelled, and the run's table is never attached."""
    logger = get_run_logger()
    stats = SegmentStats(model.k, source.features, segment_ids)
    bounds = run.id_bounds(source)
    progress = Progress("score", "customers assigned", training.n_valid, start=time.monotonic())
    with task_runner(run.settings) as (runner, workers), run.assignments_by_range() as snapshot:
        sessions = run.settings.dask_sessions or workers
        pending = deque(id_ranges(*bounds, RANGES_PER_WORKER * workers) if bounds else [])
        logger.info("score: %d ranges of ids on %d Dask workers, %d at a time", len(pending), workers, sessions)
        running: deque = deque()
        try:
            while pending or running:
                while pending and len(running) < sessions:
                    parameters = {
                        "run_id": run.run_id,
                        "snapshot": snapshot,
                        "source": source,
                        "ids": pending.popleft(),
                        "model": model,
                        "segment_ids": segment_ids,
                        "chunk_rows": run.settings.chunk_rows,
                    }
                    running.append(runner.submit(score_range, parameters=parameters))
                stats.merge(running.popleft().result())
                if line := progress.update(stats.n_customers, time.monotonic()):
                    logger.info(line)
        except BaseException:
            for future in running:
                future.wrapped_future.cancel()
            raise
    run.end_snapshot()
    return stats


@task(name="score-range", cache_policy=NO_CACHE)
def score_range(
    run_id: int,
    snapshot: str,
    source: Source,
    ids: IdRange,
    model: TrainedModel,
    segment_ids: np.ndarray,
    chunk_rows: int,
) -> SegmentStats:
    """On a Dask worker: the range's customers assigned and written (segmentation.store.
    range_pass), and their segment figures for the run to merge."""
    stats = SegmentStats(model.k, source.features, segment_ids)
    range_pass.write_range(
        run_id, snapshot, source, ids, chunk_rows, lambda chunk: _assign(model, segment_ids, stats, chunk)
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
