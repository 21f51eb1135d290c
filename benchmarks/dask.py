"""The run's passes over the source in one process against the same run on Dask, on the same
generated data: each flow run in a fresh process on a fresh copy of the database, the training
set a sample (the default 1M), so the scoring pass reads the source again. Three routes:

- one process (no Dask setting);
- a temporary local cluster (SEGMENTATION_DASK_WORKERS=N), started by the run;
- an existing cluster (SEGMENTATION_DASK_ADDRESS): a `dask scheduler` and N `dask worker`
  processes started before the timed run, each having imported the project and run a Prefect
  task, as a standing cluster's workers have after their first night.

    python -m benchmarks.dask --rows 10000000 --workers 2
    python -m benchmarks.dask --rows 10000000 --workers 2 --nightly

With --nightly, each route first runs once untimed on its copy, then the timed run is the
nightly one: compared with the first, customer by customer (on Dask, range by range).

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.e2e import BENCH_DB, _copy_of, stage_flow
from benchmarks.scratch import customers_database

ROUTES = ("one process", "temporary local cluster", "existing cluster")


@contextlib.contextmanager
def existing_cluster(workers: int, env: dict[str, str]) -> Iterator[str]:
    """A scheduler and `workers` single-threaded workers, each its own process, the project
    imported on each; yields the scheduler's address."""
    from distributed import Client

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        scheduler_file = Path(tmp) / "scheduler.json"
        common = ["--no-dashboard"]
        processes = [
            subprocess.Popen(
                [
                    str(bin_dir / "dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--scheduler-file",
                    str(scheduler_file),
                    *common,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        try:
            deadline = time.monotonic() + 60
            while not (scheduler_file.exists() and scheduler_file.read_text()):
                if time.monotonic() > deadline:
                    raise SystemExit("the Dask scheduler did not start")
                time.sleep(0.1)
            address = json.loads(scheduler_file.read_text())["address"]
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", *common],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            with Client(address, timeout="30s") as client:
                client.wait_for_workers(workers, timeout=120)
                client.run(lambda: importlib.import_module("segmentation.tasks.score") and None)
            _warm_up(address, workers)
            yield address
        finally:
            for process in reversed(processes):  # the workers first: without a scheduler they linger
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _warm_up(address: str, workers: int) -> None:
    """A Prefect task run on each worker, as a standing cluster's workers have run before the
    night's run: the task engine's first use on a worker is not the run's cost."""
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    @task
    def pause() -> None:
        time.sleep(0.5)

    @flow(task_runner=DaskTaskRunner(address=address))
    def warm() -> None:
        for future in [pause.submit() for _ in range(2 * workers)]:
            future.result()

    warm()


def stage(route: str, url: str, workers: int, k: int, n_init: int, nightly: bool) -> dict:
    """One timed flow run by the given route, in this (fresh) process."""
    os.environ["SEGMENTATION_DATABASE_URL"] = url
    for name in ("SEGMENTATION_DASK_WORKERS", "SEGMENTATION_DASK_ADDRESS"):
        os.environ.pop(name, None)
    if route == "one process":
        return stage_flow(url, k, n_init, nightly)
    if route == "temporary local cluster":
        os.environ["SEGMENTATION_DASK_WORKERS"] = str(workers)
        return stage_flow(url, k, n_init, nightly)
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow
    def warm_up() -> None:
        """Starts Prefect's API, whose address the workers need."""

    warm_up()
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    env = {**os.environ, "PREFECT_API_URL": api_url}
    with existing_cluster(workers, env) as address:
        os.environ["SEGMENTATION_DASK_ADDRESS"] = address
        return stage_flow(url, k, n_init, nightly)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--database-url")
    parser.add_argument("--nightly", action="store_true", help="time the second run, which compares with the first")
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.route:
        print(json.dumps(stage(args.route, args.database_url, args.workers, args.k, args.n_init, args.nightly)))
        return
    from segmentation import db

    server = args.database_url or db.database_url()
    results = {}
    with customers_database(server, BENCH_DB, args.rows) as bench:
        for route in ROUTES:
            with _copy_of(server, bench) as copy:
                results[route] = _child(route, copy, args)
            print(f"{route}: {results[route]['total']:.2f} s", flush=True)
    print(
        f"\n{'nightly' if args.nightly else 'first'} run, {args.rows:,} customers, k={args.k}, n_init={args.n_init}; {os.cpu_count()} cores, {args.workers} workers"
    )
    print(f"{'route':<28} {'seconds':>8} {'peak RSS MB':>12}  {'customers':>12}  inertia")
    for route, r in results.items():
        print(f"{route:<28} {r['total']:>8.2f} {r['rss_mb']:>12.0f}  {r['n']:>12,}  {r['inertia']:.1f}")
    for route, r in results.items():  # Prefect's task run times; a -range task: one of the ranges
        print(f"{route}: " + ", ".join(f"{s} {v:.2f}" for s, v in r["stages"].items()))
    single = results["one process"]["total"]
    for route in ROUTES[1:]:
        print(f"{route} / one process = {results[route]['total'] / single:.2f}  (goal <= 1.15 on this 2-core machine)")


def _child(route: str, url: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.dask", "--route", route, "--database-url", url]
    cmd += ["--workers", str(args.workers), "--k", str(args.k), "--n-init", str(args.n_init)]
    cmd += ["--nightly"] if args.nightly else []
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{route} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
