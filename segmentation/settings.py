"""Settings read from environment variables. Every variable is documented in docs/configuration.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import platformdirs

from segmentation import dburl
from segmentation.errors import SegmentationError

DATABASE_URL_ENV = "SEGMENTATION_DATABASE_URL"
DATABASE_URL_SECRET_ENV = "SEGMENTATION_DATABASE_URL_SECRET"
DATA_DIR_ENV = "SEGMENTATION_DATA_DIR"
CONNECT_ATTEMPTS_ENV = "SEGMENTATION_CONNECT_ATTEMPTS"
TEST_DATABASE_URL_ENV = "SEGMENTATION_TEST_DATABASE_URL"


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise SegmentationError(f"{name}={raw!r} is not a positive whole number; unset it or fix it")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str | None = field(repr=False)  # None: the embedded PostgreSQL
    data_dir: Path
    chunk_rows: int = 200_000
    training_sample_size: int = 1_000_000
    k_selection_sample_size: int = 50_000
    silhouette_sample_size: int = 5_000
    keep_published_runs: int = 30
    quarantine_keep_days: int = 30
    # The passes over the source on Dask (segmentation.tasks.dask): a scheduler's address, or a
    # temporary local cluster of this many worker processes; neither: in this process.
    dask_address: str | None = None
    dask_workers: int | None = None
    dask_sessions: int | None = None  # concurrent COPY sessions at most; None: one per worker
    connect_attempts: int = 3

    @classmethod
    def from_env(cls) -> Settings:
        url = os.environ.get(DATABASE_URL_ENV) or None
        secret = os.environ.get(DATABASE_URL_SECRET_ENV)
        if url is None and secret:
            url = _secret_block(secret)
        if url is not None:
            libpq_url(url)  # a URL that cannot be used is one line now, before any run starts
        data_dir = os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("customer-segmentation")
        return cls(
            database_url=url,
            data_dir=Path(data_dir).expanduser(),
            chunk_rows=_positive_int("SEGMENTATION_CHUNK_ROWS", cls.chunk_rows),
            training_sample_size=_positive_int("SEGMENTATION_TRAINING_SAMPLE_SIZE", cls.training_sample_size),
            k_selection_sample_size=_positive_int("SEGMENTATION_K_SELECTION_SAMPLE_SIZE", cls.k_selection_sample_size),
            silhouette_sample_size=_positive_int("SEGMENTATION_SILHOUETTE_SAMPLE_SIZE", cls.silhouette_sample_size),
            keep_published_runs=_positive_int("SEGMENTATION_KEEP_PUBLISHED_RUNS", cls.keep_published_runs),
            quarantine_keep_days=_positive_int("SEGMENTATION_QUARANTINE_KEEP_DAYS", cls.quarantine_keep_days),
            connect_attempts=connect_attempts(),
            **_dask_settings(),
        )

    @property
    def on_dask(self) -> bool:
        return self.dask_address is not None or self.dask_workers is not None

    def sizes(self) -> dict[str, int]:
        """The sampling and chunking settings, recorded with every run."""
        return {
            "chunk_rows": self.chunk_rows,
            "training_sample_size": self.training_sample_size,
            "k_selection_sample_size": self.k_selection_sample_size,
            "silhouette_sample_size": self.silhouette_sample_size,
        }

    def in_force(self) -> dict[str, Any]:
        """The settings recorded with every run (runs.params): sizes, and where it scores."""
        return {
            **self.sizes(),
            "dask_address": self.dask_address,
            "dask_workers": self.dask_workers,
            "dask_sessions": self.dask_sessions,
        }


def connect_attempts() -> int:
    """SEGMENTATION_CONNECT_ATTEMPTS: read where a connection is opened (segmentation.db.connect),
    which has no Settings at hand, and checked with the other settings in Settings.from_env."""
    return _positive_int(CONNECT_ATTEMPTS_ENV, Settings.connect_attempts)


def _optional_positive_int(name: str) -> int | None:
    return _positive_int(name, 0) if os.environ.get(name) else None


def _dask_settings() -> dict[str, Any]:
    address = os.environ.get("SEGMENTATION_DASK_ADDRESS") or None
    workers = _optional_positive_int("SEGMENTATION_DASK_WORKERS")
    if address is not None and workers is not None:
        raise SegmentationError(
            "SEGMENTATION_DASK_ADDRESS and SEGMENTATION_DASK_WORKERS are both set; set the address to use an "
            "existing Dask cluster, or the number of workers to start a local one, not both"
        )
    # Said when the run starts, not after its first pass over the source.
    if (address is not None or workers is not None) and find_spec("prefect_dask") is None:
        raise SegmentationError(
            "SEGMENTATION_DASK_ADDRESS or SEGMENTATION_DASK_WORKERS is set but prefect-dask is not installed; "
            "pip install 'customer-segmentation[dask]', or unset them"
        )
    return {
        "dask_address": address,
        "dask_workers": workers,
        "dask_sessions": _optional_positive_int("SEGMENTATION_DASK_SESSIONS"),
    }


def _secret_block(name: str) -> str:
    """The database URL kept in a Prefect Secret block, so it lives in Prefect's store and
    not in the environment of every process."""
    from prefect.blocks.system import Secret

    try:
        # _sync: Prefect's async_dispatch would hand back a coroutine to a caller that runs inside an
        # event loop's thread (Dask runs a function sent to its workers in one), sync as this is.
        load: Any = Secret.load  # _sync is the dispatcher's keyword, not in load's signature
        block = load(name, _sync=True)
        return str(block.get())
    except ValueError:
        raise SegmentationError(
            f"{DATABASE_URL_SECRET_ENV}={name!r} names no Prefect Secret block; create it "
            f"(Secret(value='postgresql://...').save({name!r})) or unset {DATABASE_URL_SECRET_ENV}"
        ) from None


def libpq_url(url: str) -> str:
    """SEGMENTATION_DATABASE_URL as libpq takes it, in any form libpq accepts (segmentation.dburl),
    or one line saying what is wrong with it."""
    return dburl.check(url, DATABASE_URL_ENV)
