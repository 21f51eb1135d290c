"""Assigning every customer of the snapshot to a segment and writing the assignments: in this
process, or on Dask (SEGMENTATION_DASK_ADDRESS or SEGMENTATION_DASK_WORKERS) as one Prefect
task per range of ids, each reading and writing its range itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.comparison import Changes
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
    (a task's parameters travel with what it submits, and a Run's connections cannot). Either
    way each chunk is also compared with the previous run on the same table, for the drift."""
    compare_with = previous if previous is not None and previous.same_table(str(source.table)) else None
    if cluster.enabled and not training.complete:
        stats = _score_on_dask(run, source, training, model, segment_ids, compare_with, cluster)
    else:
        stats = score_here(run, source, training, model, segment_ids, compare_with)
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
    run: Run,
    source: Source,
    training: TrainingSet,
    model: TrainedModel,
    segment_ids: np.ndarray,
    compare_with: PreviousRun | None,
    cluster: Cluster,
) -> SegmentStats:
    """One score-range task per range of ids, at most SEGMENTATION_DASK_SESSIONS (default: one
    per worker) at a time, since each holds two database sessions. Each range also compares its
    rows with compare_with's there. The first failure fails the pass, and the run's table is
    never attached."""
    logger = get_run_logger()
    stats = SegmentStats(model.k, source.features, segment_ids)
    ranges = cluster.ranges(run.id_bounds(source))
    if not ranges:
        raise RuntimeError("the scoring pass has no ids to split, but the training set is a sample")
    progress = Progress("score", "customers assigned", training.n_valid, start=time.monotonic())
    logger.info(
        "score: %d ranges of ids on %d Dask workers, %d at a time", len(ranges), cluster.workers, cluster.sessions
    )
    with run.assignments_by_range((ranges[0][0], ranges[-1][1]), compare_with) as ranges_pass:
        parameters = [
            {
                "run_id": run.run_id,
                "snapshot": ranges_pass.snapshot,
                "source": source,
                "part": part,
                "model": model,
                "segment_ids": segment_ids,
                "chunk_rows": run.settings.chunk_rows,
                "compare_with": ranges_pass.compare_with,
            }
            for part in enumerate(ranges)
        ]
        for scored in cluster.map(score_range, parameters):
            stats.merge(scored.stats)
            ranges_pass.changes.append(scored.changes)
            if line := progress.update(stats.n_customers, time.monotonic()):
                logger.info(line)
    run.end_snapshot()
    return stats


@dataclass
class ScoredRange:
    """What a score-range task sends back: its segment figures, and its customers whose segment
    differs from the previous run's (None: not compared, or it gave up)."""

    stats: SegmentStats
    changes: Changes | None


@task(name="score-range", cache_policy=NO_CACHE)
def score_range(
    run_id: int,
    snapshot: str,
    source: Source,
    part: tuple[int, IdRange],
    model: TrainedModel,
    segment_ids: np.ndarray,
    chunk_rows: int,
    compare_with: PreviousRun | None,
) -> ScoredRange:
    """On a Dask worker: the range's customers assigned and written (segmentation.store.
    range_pass), and their segment figures for the run to merge. part: the range's number
    and ids."""
    stats = SegmentStats(model.k, source.features, segment_ids)
    _, changes = range_pass.write_range(
        run_id,
        snapshot,
        source,
        part,
        chunk_rows,
        lambda chunk: _assign(model, segment_ids, stats, chunk),
        compare_with,
    )
    return ScoredRange(stats, changes)


def _assign(
    model: TrainedModel, segment_ids: np.ndarray, stats: SegmentStats, chunk: Chunk
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's published segment ids and distances, its figures added to stats: the same in
    this process and on a worker."""
    labels, distances = assign(model.centers, model.scaler.transform(chunk.X))
    stats.update(labels, chunk.X, chunk.gender)
    return segment_ids[labels].astype(np.int32), distances
