"""Assigning every customer of the snapshot to a segment and writing the assignments."""

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
from segmentation.source.stream import Chunk
from segmentation.store.run import Run
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


@task(name="score", cache_policy=NO_CACHE)
def score(
    run: Run, source: Source, training: TrainingSet, model: TrainedModel, segment_ids: np.ndarray
) -> SegmentStats:
    """Stream chunk by chunk: assign, write with COPY, and accumulate the segment figures,
    so memory is bounded by the chunk and the training set, not by the table."""
    logger = get_run_logger()
    stats = SegmentStats(model.k, source.features, segment_ids)
    progress = Progress("score", "customers assigned", training.n_valid, start=time.monotonic())
    with run.assignments() as writer:
        for chunk in _chunks(run, source, training):
            labels, distances = assign(model.centers, model.scaler.transform(chunk.X))
            writer.write(chunk.ids, segment_ids[labels].astype(np.int32), distances)
            stats.update(labels, chunk.X, chunk.gender)
            if line := progress.update(writer.rows, time.monotonic()):
                logger.info(line)
        run.end_snapshot()  # the last read of the source is done
    if writer.rows != training.n_valid:
        raise RuntimeError(f"scored {writer.rows} customers but the snapshot has {training.n_valid}")
    logger.info("score: %s customers assigned to %d segments", f"{writer.rows:,}", model.k)
    return stats
