"""The scoring pass in one process against the same run on a temporary local Dask cluster
(SEGMENTATION_DASK_WORKERS), on the same generated data: each flow run in a fresh process on a
fresh copy of the database, the training set a sample (the default 1M), so the scoring pass
reads the source again.

    python -m benchmarks.dask --rows 10000000 --workers 2

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os

from benchmarks.e2e import BENCH_DB, _child, _copy_of
from benchmarks.scratch import customers_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from segmentation import db

    server = args.database_url or db.database_url()
    results = {}
    with customers_database(server, BENCH_DB, args.rows) as bench:
        for route, workers in (("one process", None), (f"Dask, {args.workers} local workers", args.workers)):
            if workers is None:
                os.environ.pop("SEGMENTATION_DASK_WORKERS", None)
            else:
                os.environ["SEGMENTATION_DASK_WORKERS"] = str(workers)
            with _copy_of(server, bench) as copy:
                results[route] = _child("flow", copy, args)
            print(f"{route}: {results[route]['total']:.2f} s", flush=True)
    os.environ.pop("SEGMENTATION_DASK_WORKERS", None)
    print(f"\n{args.rows:,} customers, k={args.k}, n_init={args.n_init}; {os.cpu_count()} cores")
    print(f"{'route':<28} {'seconds':>8} {'peak RSS MB':>12}  {'customers':>12}  inertia")
    for route, r in results.items():
        print(f"{route:<28} {r['total']:>8.2f} {r['rss_mb']:>12.0f}  {r['n']:>12,}  {r['inertia']:.1f}")
    for route, r in results.items():  # Prefect's task run times; score-range: one of the ranges
        print(f"{route}: " + ", ".join(f"{s} {v:.2f}" for s, v in r["stages"].items()))
    single, dask = results.values()
    print(f"\nDask / one process = {dask['total'] / single['total']:.2f}  (goal <= 1.15 on this 2-core machine)")


if __name__ == "__main__":
    main()
