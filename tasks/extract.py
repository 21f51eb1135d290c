"""Checking the source, reading the training set, and quarantining invalid rows."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core.progress import Progress
from segmentation.core.sampling import HashSample
from segmentation.source.catalog import Source
from segmentation.store.run import Run


@dataclass
class TrainingSet:
    ids: np.ndarray
    X: np.ndarray  # original units
    gender: np.ndarray
    n_valid: int  # valid customers in the snapshot; more than len(ids) when sampled
    n_rows: int  # all rows in the snapshot, valid or not

    @property
    def complete(self) -> bool:
        return len(self.ids) == self.n_valid


@task(name="check-source", cache_policy=NO_CACHE)
def check_source(run: Run, source_table: str, id_column: str, features: list[str]) -> Source:
    source = run.resolve_source(source_table, id_column, features)
    get_run_logger().info("source %s: id %s, features %s", source.table, source.id_column, ", ".join(source.features))
    return source


@task(name="extract", cache_policy=NO_CACHE)
def extract(run: Run, source: Source, random_state: int) -> TrainingSet:
    """One pass over the valid rows: all of them when they fit the training sample size,
    otherwise a uniform random sample of that size, reproducible from random_state."""
    logger = get_run_logger()
    n_rows = run.count_rows(source)
    sample = HashSample(run.settings.training_sample_size, random_state)
    # Valid customers counted against all rows (invalid rows are not streamed): it ends short of
    # 100% by the invalid share.
    progress = Progress("extract", "rows read (valid ones counted)", n_rows, start=time.monotonic())
    for chunk in run.read_valid(source, n_rows=n_rows):
        sample.offer(chunk.ids, X=chunk.X, gender=chunk.gender)
        if line := progress.update(sample.seen, time.monotonic()):
            logger.info(line)
    ids, columns = sample.result()
    X = columns.get("X", np.empty((0, len(source.features))))
    gender = columns.get("gender", np.empty(0, dtype=np.int16))
    logger.info("extract: %d valid customers of %d rows, training on %d", sample.seen, n_rows, len(ids))
    return TrainingSet(ids, X, gender, sample.seen, n_rows)


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
