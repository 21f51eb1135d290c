"""Speed of scoring in SQL: segmentation_bi.predict(to_jsonb(c)) over every customer of the source
table, in one session without parallel workers, for the current run (constants compiled into
the function), for a run named by id (one dynamic call per customer) and for a segmentation's
current run named by its name.

    python -m benchmarks.predict --rows 1000000
    python -m benchmarks.predict --rows 200000 --shape crm
    python -m benchmarks.predict --rows 200000 --shape crm --runs 5

--runs N: N runs kept (each published in turn, the last current), as retention keeps them by
night; what a scan pays for the runs kept besides the current one.

--shape crm: the CRM shape (`segmentation generate --shape crm`) and an RFM segmentation with
feature specs (log1p, a clip, a category, days_since, a missing-value segment), scored from each
RFM row as it is.

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database `segmentation_bench_predict` is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from benchmarks.scratch import customers_database, scratch_database

BENCH_DB = "segmentation_bench_predict"
QUERIES = {
    "predict(to_jsonb(c))": "SELECT count(p.segment_id) FROM public.customers c "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c)) p",
    "predict(to_jsonb(c), run_id)": "SELECT count(p.segment_id) FROM public.customers c "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), %s) p",
    # A segmentation's current run, by name (the segmentation here is the default).
    "predict(to_jsonb(c), 'default')": "SELECT count(p.segment_id) FROM public.customers c "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), 'default'::text) p",
    "to_jsonb(c) and three fields only": "SELECT count((j ->> 'age')::float8 + (j ->> 'annual_income')::float8 "
    "+ (j ->> 'spending_score')::float8) FROM (SELECT to_jsonb(c) AS j FROM public.customers c OFFSET 0) s",
}


# The RFM segmentation --shape crm runs (as in docs/configuration.md#feature-specs).
RFM_FEATURES = [
    "recency_days:log1p:missing=segment:missing_segment=Never ordered:low=Recent:high=Lapsed",
    "frequency:log1p",
    "monetary:log1p:clip=0.99",
    "plan:category",
    "signup_date:days_since",
]
CRM_QUERIES = {
    "predict(to_jsonb(r)), RFM specs": "SELECT count(p.segment_id) FROM public.rfm r "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(r)) p",
    "predict(to_jsonb(r), run_id), RFM specs": "SELECT count(p.segment_id) FROM public.rfm r "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(r), %s) p",
    "predict(to_jsonb(r), 'default'), RFM specs": "SELECT count(p.segment_id) FROM public.rfm r "
    "CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(r), 'default'::text) p",
    "to_jsonb(r) only: the ceiling": "SELECT count(j ->> 'monetary') FROM (SELECT to_jsonb(r) AS j FROM public.rfm r OFFSET 0) s",
}


@contextmanager
def _crm(server: str, rows: int, runs: int) -> Iterator[tuple[str, int]]:
    """A scratch database with the CRM shape and a published RFM run: its URL and run id."""
    from segmentation import crm_shape, migrations
    from segmentation.flows.segmentation import customer_segmentation

    with scratch_database(server, BENCH_DB) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.upgrade(conn)
            crm_shape.generate(conn, rows, 0, "crm")
            # Integer ids: the id type the run reads today.
            conn.execute(
                "CREATE TABLE public.rfm AS SELECT row_number() OVER (ORDER BY id)::bigint AS customer_id, r.* "
                "FROM crm.customer_rfm r"
            )
            conn.execute("ALTER TABLE public.rfm ADD PRIMARY KEY (customer_id)")
            conn.execute("VACUUM ANALYZE public.rfm")
        os.environ["SEGMENTATION_DATABASE_URL"] = url
        for _ in range(runs):
            state = customer_segmentation(
                n_clusters=5,
                source_table="public.rfm",
                features=RFM_FEATURES,
                min_segment_share=0.0,
                max_quarantined_share=1.0,
                return_state=True,
            )
            run_id = state.result()["run_id"]
        print(f"{rows:,} CRM customers, k=5, features {', '.join(RFM_FEATURES)}; run {run_id} of {runs} kept")
        yield url, run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--shape", choices=["mall", "crm"], default="mall")
    parser.add_argument("--runs", type=int, default=1, help="runs kept, the last current (--shape crm)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from segmentation import db
    from segmentation.flows.segmentation import customer_segmentation

    server = args.database_url or db.database_url()
    if args.shape == "crm":
        with _crm(server, args.rows, args.runs) as (bench, run_id):
            _time(bench, CRM_QUERIES, run_id, args.rows, args.repeat)
        return
    with customers_database(server, BENCH_DB, args.rows, seed=0) as bench:
        os.environ["SEGMENTATION_DATABASE_URL"] = bench
        state = customer_segmentation(n_clusters=5, return_state=True)
        run_id = state.result()["run_id"]
        print(f"{args.rows:,} customers, k=5, features age, annual_income, spending_score; run {run_id}")
        _time(bench, QUERIES, run_id, args.rows, args.repeat)


def _time(bench: str, queries: dict[str, str], run_id: int, rows: int, repeat: int) -> None:
    with psycopg.connect(bench, autocommit=True) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        for label, query in queries.items():
            seconds = []
            for _ in range(repeat):
                started = time.perf_counter()
                conn.execute(query, (run_id,) if "%s" in query else None).fetchone()
                seconds.append(time.perf_counter() - started)
            best = min(seconds)
            print(f"{label:40s} {rows / best:>10,.0f} customers/s  (runs {', '.join(f'{s:.2f}' for s in seconds)} s)")


if __name__ == "__main__":
    main()
