"""Checking the source, quarantining invalid rows, and reading the training set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation import db, runs
from segmentation.core.sampling import HashSample
from segmentation.source import Source, count_rows, quarantine_copy_query, resolve_source
from segmentation.split_read import stream_valid_split
from tasks.run import RunContext


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
def check_source(run: RunContext, source_table: str, id_column: str, features: list[str]) -> Source:
    source = resolve_source(run.snapshot, source_table, id_column, features)
    # Record the names as the catalog spells them, so runs compare equal however they were typed.
    runs.record_source(run.conn, run.run_id, str(source.table), source.features)
    get_run_logger().info(
        "source %s: id %s, features %s", source.table, source.id_column, ", ".join(source.features)
    )
    return source


@task(name="extract", cache_policy=NO_CACHE)
def extract(run: RunContext, source: Source, random_state: int) -> TrainingSet:
    """One pass over the valid rows: all of them when they fit the training sample size,
    otherwise a uniform random sample of that size, reproducible from random_state. A table
    of more than two chunks is read over two sessions in the run's snapshot."""
    logger = get_run_logger()
    n_rows = count_rows(run.snapshot, source)
    sample = HashSample(run.settings.training_sample_size, random_state)
    chunks = stream_valid_split(
        run.snapshot, source, run.settings.chunk_rows,
        # Resolved only when a second session is opened (for the embedded server, a lookup).
        connect=lambda: db.connect(db.database_url(run.settings), application_name="segmentation-snapshot"),
        min_rows=2 * run.settings.chunk_rows, n_rows=n_rows,
    )
    for chunk in chunks:
        sample.offer(chunk.ids, X=chunk.X, gender=chunk.gender)
        if sample.seen > run.settings.chunk_rows:
            logger.info("extract: %d valid customers read", sample.seen)
    ids, columns = sample.result()
    X = columns.get("X", np.empty((0, len(source.features))))
    gender = columns.get("gender", np.empty(0, dtype=np.int16))
    logger.info("extract: %d valid customers of %d rows, training on %d", sample.seen, n_rows, len(ids))
    return TrainingSet(ids, X, gender, sample.seen, n_rows)


@task(name="quarantine-invalid", cache_policy=NO_CACHE)
def quarantine_invalid(run: RunContext, source: Source, training: TrainingSet) -> int:
    """Copy the invalid rows of the snapshot, with their reasons, into segmentation.quarantine.
    Skipped when the extract read every row: a clean table is not scanned twice."""
    n = 0
    if training.n_rows > training.n_valid:
        n = runs.quarantine(run.snapshot, run.conn, quarantine_copy_query(source, run.run_id))
        get_run_logger().warning("%d rows quarantined (see segmentation.quarantine, run_id %d)", n, run.run_id)
    if training.n_valid + n != training.n_rows:
        # The valid-row filter and the reasons are two SQL forms of one rule list; they must agree.
        raise RuntimeError(
            f"{training.n_rows} rows in the snapshot but {training.n_valid} valid and {n} quarantined"
        )
    if training.complete:
        # Every valid customer is in memory: end the snapshot now rather than hold its lock on
        # the source (and vacuum's horizon) through training.
        run.snapshot.rollback()
    return n
