"""The Dask cluster a run's scoring pass goes to, through Prefect's own integration
(prefect-dask, the optional extra `dask`): an existing scheduler (SEGMENTATION_DASK_ADDRESS)
or a temporary local cluster of worker processes (SEGMENTATION_DASK_WORKERS)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from segmentation.errors import SegmentationError
from segmentation.settings import Settings

CONNECT_TIMEOUT = "10s"  # an unreachable scheduler fails the run, it does not hang it


@contextmanager
def task_runner(settings: Settings) -> Iterator[tuple[Any, int]]:
    """A started DaskTaskRunner and how many workers its cluster has."""
    from prefect_dask import DaskTaskRunner  # installed: Settings checks it when the run starts

    if settings.dask_address is not None:
        runner = DaskTaskRunner(address=settings.dask_address, client_kwargs={"timeout": CONNECT_TIMEOUT})
    else:
        # The workers report their task runs to this process's Prefect API, even when it is the
        # ephemeral one (each worker would otherwise start its own, some seconds each).
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            api_url = str(client.api_url)
        runner = DaskTaskRunner(
            cluster_kwargs={
                "env": {"PREFECT_API_URL": api_url},
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
                "silence_logs": logging.WARNING,
            }
        )
    # The cluster's own comings and goings are not the run's news.
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with runner:
        try:
            workers = len(runner.client.scheduler_info(n_workers=-1)["workers"])
        except OSError as exc:
            raise SegmentationError(
                f"cannot reach the Dask scheduler at {settings.dask_address} ({' '.join(str(exc).split())}); "
                "start it, or fix or unset SEGMENTATION_DASK_ADDRESS"
            ) from None
        if workers == 0:
            raise SegmentationError(
                f"the Dask scheduler at {settings.dask_address} has no workers; start some (dask worker "
                f"{settings.dask_address}), or unset SEGMENTATION_DASK_ADDRESS"
            )
        yield runner, workers
