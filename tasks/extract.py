"""Checking the source, reading the training set, and quarantining invalid rows. The extract
offers every valid row to the training sample (segmentation.passes.sample_part, the one
definition of that work): in the flow's process, or one extract-range task per range of ids on
Dask."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.progress import Progress
from segmentation.core.sampling import HashSample, SplitSample
from segmentation.passes import sample_part
from segmentation.source.catalog import Source
from segmentation.source.queries import IdRange
from segmentation.store import range_pass
from segmentation.store.run import Run
from segmentation.tasks.dask import Cluster


@dataclass
class TrainingSet:
    ids: np.ndarray
    X: np.ndarray  # original units
    gender: np.ndarray
    rule: np.ndarray | None  # missing-value segment per row (0: clustered); None: the run has none
    n_valid: int  # valid customers in the snapshot; more than len(ids) when sampled
    n_rows: int  # all rows in the snapshot, valid or not

    @property
    def complete(self) -> bool:
        return len(self.ids) == self.n_valid

    @property
    def clustered(self) -> np.ndarray:
        """The rows KMeans is trained on: not in a missing-value segment."""
        return self.X if self.rule is None else self.X[self.rule == 0]

    @property
    def n_clustered(self) -> int:
        """Valid customers to cluster: exact when the training set is complete, else estimated
        from the sample."""
        if self.rule is None or not len(self.ids):
            return self.n_valid
        in_sample = int((self.rule == 0).sum())
        return in_sample if self.complete else round(self.n_valid * in_sample / len(self.ids))


@dataclass
class SampledRange:
    """What an extract-range task sends back: its part of the sample, and how many valid rows
    it read."""

    seen: int
    ids: np.ndarray
    X: np.ndarray
    gender: np.ndarray
    rule: np.ndarray | None


@task(name="check-source", cache_policy=NO_CACHE)
def check_source(run: Run, source_table: str, id_column: str, features: list) -> Source:
    source = run.resolve_source(source_table, id_column, features)
    get_run_logger().info("source %s: id %s, features %s", source.table, source.id_column, ", ".join(source.features))
    return source


def extract(run: Run, source: Source, random_state: int, cluster: Cluster) -> TrainingSet:
    """One pass over the valid rows: all of them when they fit the training sample size,
    otherwise a uniform random sample of that size, reproducible from random_state. The extract
    task, in this process; or, with Dask set, an extract-range task per range of ids on Dask,
    submitted from the flow run (as the scoring pass's are, segmentation.tasks.score): the same
    training set either way."""
    if cluster.enabled:
        return _extract_on_dask(run, source, random_state, cluster)
    return extract_here(run, source, random_state)


@task(name="extract", cache_policy=NO_CACHE)
def extract_here(run: Run, source: Source, random_state: int) -> TrainingSet:
    logger = get_run_logger()
    n_rows = run.count_rows(source)
    sample = HashSample(run.settings.training_sample_size, random_state)
    # Valid customers counted against all rows (invalid rows are not streamed): it ends short of
    # 100% by the invalid share.
    progress = Progress("extract", "rows read (valid ones counted)", n_rows, start=time.monotonic())

    def tell(seen: int) -> None:
        if line := progress.update(seen, time.monotonic()):
            logger.info(line)

    sample_part(run.read_valid(source, n_rows=n_rows), sample, tell)
    return _training_set(source, *sample.result(), sample.seen, n_rows)


def _extract_on_dask(run: Run, source: Source, random_state: int, cluster: Cluster) -> TrainingSet:
    """Each range sends its part of the sample (segmentation.core.sampling.SplitSample): about
    a range's share of 1.25 times the sample size, not its rows. Read again, with a higher key
    limit, in the rare case that too few rows passed it."""
    logger = get_run_logger()
    n_rows = run.count_rows(source)
    ranges = cluster.ranges(run.id_bounds(source))
    snapshot = run.export_snapshot()
    split = SplitSample(run.settings.training_sample_size, random_state, n_rows)
    logger.info(
        "extract: %d ranges of ids on %d Dask workers, %d at a time", len(ranges), cluster.workers, cluster.sessions
    )
    while True:
        progress = Progress("extract", "rows read (valid ones counted)", n_rows, start=time.monotonic())
        parameters = [
            {
                "snapshot": snapshot,
                "server": run.server,
                "source": source,
                "ids": ids,
                "chunk_rows": run.settings.chunk_rows,
                "size": split.size,
                "seed": random_state,
                "below": split.below,
            }
            for ids in ranges
        ]
        for part in cluster.map(extract_range, parameters):
            split.add(part.seen, part.ids, **_offered(part.X, part.gender, part.rule))
            if line := progress.update(split.seen, time.monotonic()):
                logger.info(line)
        if split.finished():
            break
        logger.info("extract: fewer valid rows than the sample passed the ranges' key limit; reading them again")
    return _training_set(source, *split.result(), split.seen, n_rows)


@task(name="extract-range", cache_policy=NO_CACHE)
def extract_range(
    snapshot: str,
    server: str,
    source: Source,
    ids: IdRange,
    chunk_rows: int,
    size: int,
    seed: int,
    below: int | None,
) -> SampledRange:
    """On a Dask worker: the range's valid rows read in the run's snapshot, on the run's server,
    and the sample of those whose key is below `below`."""
    rows = range_pass.read_range(snapshot, source, ids, chunk_rows, server)
    sample = sample_part(rows, HashSample(size, seed, below=below))
    sampled, columns = sample.result()
    X, gender, rule = _columns(source, columns)
    return SampledRange(sample.seen, sampled, X, gender, rule)


def _offered(X: np.ndarray, gender: np.ndarray, rule: np.ndarray | None) -> dict[str, np.ndarray]:
    """The columns a sample keeps of each row."""
    return {"X": X, "gender": gender} if rule is None else {"X": X, "gender": gender, "rule": rule}


def _columns(source: Source, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """X, gender and missing-value segments of a sample, empty ones when it has no rows."""
    X = columns.get("X", np.empty((0, len(source.inputs))))
    rule = columns.get("rule", np.empty(0, dtype=np.int16)) if source.plan.rule_features else None
    return X, columns.get("gender", np.empty(0, dtype=np.int16)), rule


def _training_set(
    source: Source, ids: np.ndarray, columns: dict[str, np.ndarray], n_valid: int, n_rows: int
) -> TrainingSet:
    get_run_logger().info("extract: %d valid customers of %d rows, training on %d", n_valid, n_rows, len(ids))
    return TrainingSet(ids, *_columns(source, columns), n_valid, n_rows)


@task(name="quarantine-invalid", cache_policy=NO_CACHE)
def quarantine_invalid(run: Run, source: Source, training: TrainingSet) -> int:
    """Copy the invalid rows of the snapshot, with their reasons, into segmentation.quarantine.
    Skipped when the extract read every row: a clean table is not scanned twice."""
    n = 0
    if training.n_rows > training.n_valid:
        n = run.quarantine(source)
        get_run_logger().warning("%d rows quarantined (see segmentation.quarantine, run_id %d)", n, run.run_id)
    if training.n_valid + n != training.n_rows:
        # The valid-row filter and the reasons are two SQL forms of one rule list; they must agree.
        raise RuntimeError(f"{training.n_rows} rows in the snapshot but {training.n_valid} valid and {n} quarantined")
    if training.complete:
        # Every valid customer is in memory: the scoring pass does not read the source again.
        run.end_snapshot()
    return n
