"""Disk and time of the history kept as segment spells.

--runs nightly runs of --customers customers, --churn of them moving to another segment each
night and --arrivals new customers each night, written through the store's own Run as the
flow writes them (assignments by binary COPY, drift, publish into the history, retention),
without the training. Prints per run the disk used by the per-customer history (every
customer_segments partition and segmentation.segment_spells, indexes included) against one
run's assignments; then lookups on customer_segment_history and a rollback that rebuilds a run
from the spells.

    python -m benchmarks.history --customers 10000000 --runs 30 --churn 0.01

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database `segmentation_bench_history` is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import psycopg

from benchmarks.scratch import scratch_database
from segmentation import dburl

BENCH_DB = "segmentation_bench_history"
K = 5
CHUNK = 1_000_000


def _publication(ids: np.ndarray, counts: np.ndarray, n: int, drift: dict | None):
    from segmentation.core.model import KCandidate
    from segmentation.store import scoring
    from segmentation.store.runs import Publication

    segments = pd.DataFrame({"segment_id": ids, "n_customers": counts, "share": counts / n, "segment_name": "s"})
    centroids = pd.DataFrame(
        {"segment_id": ids, "feature": "age", "centroid": 1.0, "mean": 1.0, "stddev": 1.0, "min": 1.0, "max": 1.0}
    )
    model = scoring.Model(("age",), np.array([40.0]), np.array([10.0]), ids.reshape(-1, 1) * 1.0, ids, ["s"] * len(ids))
    return Publication(K, n, 0, 1.0, None, segments, centroids, [KCandidate(K, 1.0, None)], drift, [], model)


def one_run(customers: np.ndarray, segments: np.ndarray, keep: int, rng: np.random.Generator) -> tuple[int, dict]:
    from dataclasses import asdict

    from segmentation.settings import Settings
    from segmentation.store.run import Run

    times = {}
    run, _ = Run.start(
        Settings.from_env(), flow_run_id=None, source_table="public.customers", features=["age"], params={}
    )
    try:
        t = time.perf_counter()
        with run.assignments() as writer:
            for start in range(0, len(customers), CHUNK):
                part = slice(start, start + CHUNK)
                writer.write(customers[part], segments[part], rng.random(len(customers[part])))
        times["write"] = time.perf_counter() - t
        t = time.perf_counter()
        previous = run.previous()
        drift = run.drift(previous, None) if previous is not None else None
        times["drift"] = time.perf_counter() - t
        t = time.perf_counter()
        ids, counts = np.unique(segments, return_counts=True)
        found = _publication(ids.astype(np.int64), counts, len(customers), asdict(drift) if drift else None)
        run.complete(found, status="published", compared_with=drift.previous_run_id if drift else None)
        times["publish"] = time.perf_counter() - t
        t = time.perf_counter()
        run.prune(keep)
        times["retention"] = time.perf_counter() - t
        return run.run_id, times
    finally:
        run.close()


def sizes(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(bytes in customer_segments partitions, bytes in segment_spells, number of partitions)."""
    parts, n = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0), count(*) FROM pg_inherits "
        "WHERE inhparent = 'segmentation.customer_segments'::regclass"
    ).fetchone()
    spells = conn.execute("SELECT pg_total_relation_size('segmentation.segment_spells')").fetchone()[0]
    return int(parts), int(spells), int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--churn", type=float, default=0.01, help="share of customers moving segment each night")
    parser.add_argument("--arrivals", type=float, default=0.0, help="new customers each night, as a share")
    parser.add_argument("--keep", type=int, default=30, help="SEGMENTATION_KEEP_PUBLISHED_RUNS")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--disk-only", action="store_true", help="skip the read-back timings (minutes at 100M customers)"
    )
    args = parser.parse_args()
    from segmentation import db, migrations
    from segmentation.rollback import make_current

    server = db.database_url() if not args.database_url else args.database_url
    with scratch_database(server, BENCH_DB) as bench:
        os.environ["SEGMENTATION_DATABASE_URL"] = bench
        rng = np.random.default_rng(1)
        with psycopg.connect(bench) as conn:
            migrations.upgrade(conn)
        customers = np.arange(1, args.customers + 1, dtype=np.int64)
        segments = rng.integers(1, K + 1, size=args.customers).astype(np.int32)
        run_ids = []
        with psycopg.connect(bench, autocommit=True) as conn:
            one = None
            print(
                f"{'run':>4} {'write':>6} {'drift':>6} {'publish':>7} {'retain':>6}  {'tables':>9} {'spells':>9}  ratio"
            )
            for night in range(args.runs):
                if night:
                    moved = rng.choice(len(customers), size=int(len(customers) * args.churn), replace=False)
                    segments[moved] = (segments[moved] + rng.integers(1, K, size=len(moved)) - 1) % K + 1
                    new = int(len(customers) * args.arrivals)
                    customers = np.concatenate([customers, np.arange(customers[-1] + 1, customers[-1] + 1 + new)])
                    segments = np.concatenate([segments, rng.integers(1, K + 1, size=new).astype(np.int32)])
                run_id, times = one_run(customers, segments, args.keep, rng)
                run_ids.append(run_id)
                parts, spells, n_parts = sizes(conn)
                one = one or parts
                print(
                    f"{run_id:>4} {times['write']:>6.2f} {times['drift']:>6.2f} {times['publish']:>7.2f} "
                    f"{times['retention']:>6.2f}  {parts / 2**20:>7.0f}MB {spells / 2**20:>7.0f}MB  "
                    f"{(parts + spells) / one:.3f}  ({n_parts} table{'s' * (n_parts != 1)})",
                    flush=True,
                )
            parts, spells, _ = sizes(conn)
            print(
                f"\nafter {args.runs} runs of {args.customers:,} customers at {args.churn:.1%} churn a night: "
                f"{(parts + spells) / 2**20:,.0f} MB for the history, {one / 2**20:,.0f} MB for one run's assignments: "
                f"{(parts + spells) / one:.2f}x (full rows per run: {args.runs}x); "
                f"{one / len(customers):.0f} bytes a customer per run, "
                f"{spells / max(1, conn.execute('SELECT count(*) FROM segmentation.segment_spells').fetchone()[0]):.0f} "
                "bytes a spell"
            )
            if args.disk_only:
                return
            lookups = rng.integers(1, args.customers + 1, size=200)
            t = time.perf_counter()
            for customer in lookups:
                conn.execute(
                    "SELECT run_id, segment_id FROM segmentation_bi.customer_segment_history WHERE customer_id = %s",
                    (int(customer),),
                ).fetchall()
            print(f"one customer's history (every kept run): {(time.perf_counter() - t) / len(lookups) * 1000:.2f} ms")
            middle = run_ids[len(run_ids) // 2]
            t = time.perf_counter()
            n = conn.execute(
                "SELECT count(*) FROM segmentation_bi.customer_segment_history WHERE run_id = %s", (middle,)
            ).fetchone()[0]
            print(f"every customer's segment after run {middle} ({n:,} rows): {time.perf_counter() - t:.2f} s")
            if len(run_ids) < 2:
                return
            back = run_ids[-min(5, len(run_ids))]
            t = time.perf_counter()
            make_current(conn, run_id=back, reason="benchmark")
            print(f"rollback to run {back}, rebuilt from the spells: {time.perf_counter() - t:.2f} s")
    print(
        f"\n{os.cpu_count()} cores; PostgreSQL at {dburl.redact(server)}; "
        f"{args.keep} runs kept (SEGMENTATION_KEEP_PUBLISHED_RUNS)"
    )


if __name__ == "__main__":
    main()
