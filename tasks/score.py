"""The scoring pass: every customer of the snapshot assigned to a segment, written, and compared
with the previous run (segmentation.passes.score_part, the one definition of that work). Two
executors: the flow's process (one part, every customer), or, when the training set is a
sample and Dask is set, one score-range Prefect task per range of ids on Dask."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.comparison import ABSENT, Changes
from segmentation.core.progress import Progress
from segmentation.passes import Centroids, ScoredPart, score_part
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange
from segmentation.source.stream import Chunk
from segmentation.store import range_pass
from segmentation.store.history import PreviousRun
from segmentation.store.run import Run
from segmentation.tasks.dask import Cluster
from segmentation.tasks.extract import TrainingSet


def score(
    run: Run,
    source: Source,
    training: TrainingSet,
    centroids: Centroids,
    previous: PreviousRun | None,
    cluster: Cluster,
) -> ScoredPart:
    """The score task in this process, or score-range tasks on Dask, submitted from the flow
    run (a task's parameters travel with what it submits, and a Run's connections cannot).
    Either way, the whole pass as one part: the segment figures of every customer, and the
    customers whose segment differs from the previous run's on the same table (None: not
    compared in memory, or the comparison gave up; the drift then comes from SQL)."""
    compare_with = previous if previous is not None and previous.same_table(str(source.table)) else None
    if compare_with is None:
        # No arrivals will be known: ids keyed by hash are recorded meanwhile (record_customer_ids).
        run.begin_recording_ids(source)
    if cluster.enabled and not training.complete:
        scored = _score_on_dask(run, source, training, centroids, compare_with, cluster)
    else:
        scored = score_here(run, source, training, centroids, compare_with)
    if scored.stats.n_customers != training.n_valid:
        raise RuntimeError(f"scored {scored.stats.n_customers} customers but the snapshot has {training.n_valid}")
    get_run_logger().info(
        "score: %s customers assigned to %d segments", f"{scored.stats.n_customers:,}", len(centroids.segment_ids)
    )
    return scored


@task(name="record-customer-ids", cache_policy=NO_CACHE)
def record_customer_ids(run: Run, source: Source, changes: Changes | None, previous: PreviousRun | None) -> None:
    """Ids keyed by hash (text, uuid): record the new ones, for the BI views to speak the source's
    own ids, and end the snapshot. After a comparison in memory with the previous run, the new
    ones are its arrivals and only those are looked up; else every id is. Two ids with one key
    stop the run here, before it publishes. Nothing to do for integer ids."""
    if source.id_type is None:
        return
    started = time.perf_counter()
    compared = changes is not None and previous is not None and previous.same_table(str(source.table))
    arrivals = changes[0][changes[1] == ABSENT] if compared and changes is not None else None
    n = run.record_customer_ids(source, arrivals, previous.run_id if compared and previous is not None else None)
    get_run_logger().info(
        "customer ids (%s): %d new recorded in %.1f s%s",
        source.id_type,
        n,
        time.perf_counter() - started,
        "" if arrivals is None else f", looked up among {len(arrivals):,} arrivals",
    )


def _chunks(run: Run, source: Source, training: TrainingSet) -> Iterator[Chunk]:
    size = run.settings.chunk_rows
    if training.complete:  # everything is in memory already: no second read
        for start in range(0, len(training.ids), size):
            stop = start + size
            rule = None if training.rule is None else training.rule[start:stop]
            yield Chunk(training.ids[start:stop], training.X[start:stop], training.gender[start:stop], rule)
    else:
        yield from run.read_valid(source)


def _progress(total: int):
    logger = get_run_logger()
    progress = Progress("score", "customers assigned", total, start=time.monotonic())

    def tell(done: int) -> None:
        if line := progress.update(done, time.monotonic()):
            logger.info(line)

    return tell


@task(name="score", cache_policy=NO_CACHE)
def score_here(
    run: Run, source: Source, training: TrainingSet, centroids: Centroids, compare_with: PreviousRun | None = None
) -> ScoredPart:
    """One part, every customer: chunk by chunk, so memory is bounded by the chunk and the
    training set, not by the table; the assignments go into the run's table in one transaction."""
    stats = centroids.stats()
    with run.assignments(compare_with) as writer:
        scored = score_part(_chunks(run, source, training), writer, centroids, stats, _progress(training.n_valid))
        run.end_snapshot()  # the last read of the source is done
    return scored


def _score_on_dask(
    run: Run,
    source: Source,
    training: TrainingSet,
    centroids: Centroids,
    compare_with: PreviousRun | None,
    cluster: Cluster,
) -> ScoredPart:
    """One score-range task per range of ids, at most SEGMENTATION_DASK_SESSIONS (default: one
    per worker) at a time, since each holds two database sessions. The first failure fails the
    pass, and the run's table is never attached."""
    logger = get_run_logger()
    stats = centroids.stats()
    ranges = cluster.ranges(run.id_bounds(source))
    if not ranges:
        raise RuntimeError("the scoring pass has no ids to split, but the training set is a sample")
    tell = _progress(training.n_valid)
    logger.info(
        "score: %d ranges of ids on %d Dask workers, %d at a time", len(ranges), cluster.workers, cluster.sessions
    )
    changes: list[Changes | None] = []
    with run.assignments_by_range((ranges[0][0], ranges[-1][1]), compare_with) as ranges_pass:
        parameters = [
            {
                "run_id": run.run_id,
                "snapshot": ranges_pass.snapshot,
                "server": ranges_pass.server,
                "source": source,
                "part": part,
                "centroids": centroids,
                "chunk_rows": run.settings.chunk_rows,
                "compare_with": ranges_pass.compare_with,
            }
            for part in enumerate(ranges)
        ]
        for part in cluster.map(score_range, parameters):
            stats.merge(part.stats)
            changes.append(part.changes)
            tell(stats.n_customers)
    run.end_snapshot()
    return ScoredPart(stats, run.join_changes(ranges_pass, changes))


@task(name="score-range", cache_policy=NO_CACHE)
def score_range(
    run_id: int,
    snapshot: str,
    server: str,
    source: Source,
    part: tuple[int, IdRange],
    centroids: Centroids,
    chunk_rows: int,
    compare_with: PreviousRun | None,
) -> ScoredPart:
    """On a Dask worker: the range's customers assigned and written (segmentation.store.
    range_pass), and their segment figures for the run to merge. part: the range's number
    and ids."""
    return range_pass.score_range(run_id, snapshot, source, part, chunk_rows, centroids, compare_with, server)
