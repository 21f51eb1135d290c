"""The Dask cluster a run's passes over the source go to, through Prefect's own integration
(prefect-dask, the optional extra `dask`): an existing scheduler (SEGMENTATION_DASK_ADDRESS)
or a temporary local cluster of worker processes (SEGMENTATION_DASK_WORKERS). One cluster
serves the run's passes (the extract, the scoring pass): a temporary one starts once."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from segmentation.core.ranges import id_ranges
from segmentation.errors import SegmentationError
from segmentation.settings import Settings
from segmentation.source.queries import IdRange

CONNECT_TIMEOUT = "10s"  # an unreachable scheduler fails the run, it does not hang it
RANGES_PER_WORKER = 4  # smaller ranges: less to redo when a worker dies, and an even finish


class Cluster:
    """The run's cluster: started when a pass first needs it, closed when the passes are done
    (the end of its `with` block, whichever way the block ends)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._stack = ExitStack()
        self._runner: Any = None
        self.workers = 0

    @property
    def enabled(self) -> bool:
        return self.settings.on_dask

    @property
    def sessions(self) -> int:
        """Ranges in flight at most: each holds database sessions."""
        return self.settings.dask_sessions or self.workers

    def ranges(self, bounds: tuple[int, int] | None) -> list[IdRange]:
        """The ranges of ids a pass is split into, from the smallest and largest id: the same
        for every pass of the run, so a range has one number."""
        self._start()
        return id_ranges(*bounds, RANGES_PER_WORKER * self.workers) if bounds else []

    def map(self, task: Any, parameters: Iterable[dict[str, Any]]) -> Iterator[Any]:
        """The task's results, one per set of parameters, in order; at most `sessions` in
        flight. The first failure fails the pass as soon as it happens, in whichever range: what
        is still running is cancelled."""
        from distributed import as_completed

        runner = self._start()
        pending = deque(enumerate(parameters))
        running: dict[str, tuple[int, Any]] = {}  # by the Dask future's key
        completed = as_completed(loop=runner.client.loop)
        finished: dict[int, Any] = {}  # results that came before an earlier range's
        following = 0  # the index of the next result to give
        try:
            while pending or running:
                while pending and len(running) < self.sessions:
                    index, each = pending.popleft()
                    future = runner.submit(task, parameters=each)
                    running[future.wrapped_future.key] = (index, future)
                    completed.add(future.wrapped_future)
                index, future = running.pop(next(completed).key)
                finished[index] = future.result()  # raises if the task failed
                while following in finished:
                    yield finished.pop(following)
                    following += 1
        except BaseException:
            for _, future in running.values():
                future.wrapped_future.cancel()
            raise

    def _start(self) -> Any:
        if self._runner is None:
            self._runner, self.workers = self._stack.enter_context(_task_runner(self.settings))
        return self._runner

    def close(self) -> None:
        self._stack.close()
        self._runner = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextmanager
def _task_runner(settings: Settings) -> Iterator[tuple[Any, int]]:
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
