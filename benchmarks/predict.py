"""Speed of scoring in SQL: segmentation_bi.predict(to_jsonb(c)) over every customer of the source
table, in one session without parallel workers, for the current run (constants compiled into
the function) and for a run named by id (one dynamic call per customer).

    python -m benchmarks.predict --rows 1000000

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database `segmentation_bench_predict` is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import time

import psycopg

from benchmarks.scratch import customers_database

BENCH_DB = "segmentation_bench_predict"
QUERIES = {
    "predict(to_jsonb(c))": "SELECT count(p.segment_id) FROM public.customers c "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c)) p",
    "predict(to_jsonb(c), run_id)": "SELECT count(p.segment_id) FROM public.customers c "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), %s) p",
    "to_jsonb(c) and three fields only": "SELECT count((j ->> 'age')::float8 + (j ->> 'annual_income')::float8 "
    "+ (j ->> 'spending_score')::float8) FROM (SELECT to_jsonb(c) AS j FROM public.customers c OFFSET 0) s",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from segmentation import db
    from segmentation.flows.segmentation import customer_segmentation

    server = args.database_url or db.database_url()
    with customers_database(server, BENCH_DB, args.rows, seed=0) as bench:
        os.environ["SEGMENTATION_DATABASE_URL"] = bench
        state = customer_segmentation(n_clusters=5, return_state=True)
        run_id = state.result()["run_id"]
        print(f"{args.rows:,} customers, k=5, features age, annual_income, spending_score; run {run_id}")
        with psycopg.connect(bench, autocommit=True) as conn:
            conn.execute("SET max_parallel_workers_per_gather = 0")
            for label, query in QUERIES.items():
                seconds = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    conn.execute(query, (run_id,) if "%s" in query else None).fetchone()
                    seconds.append(time.perf_counter() - started)
                best = min(seconds)
                print(
                    f"{label:36s} {args.rows / best:>10,.0f} customers/s  "
                    f"(runs {', '.join(f'{s:.2f}' for s in seconds)} s)"
                )


if __name__ == "__main__":
    main()
