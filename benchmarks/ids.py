"""Text ids against bigint ids: the same generated customers, once with their bigint ids and once
with text ids like `cus_3f9a0c1b2d4e5f` (the id column retyped in a copy, primary key kept), each
timed as a first run and as a nightly run (a second run on the same data), every run in a fresh
copy and a process of its own (benchmarks.e2e's stages), with peak RSS. Prints each time and the
text/bigint ratios: the goal is at most 1.3 and within 1 GB.

    python -m benchmarks.ids --rows 10000000 --repeat 3

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. Scratch
databases `segmentation_bench_ids_*` are created there and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from benchmarks.e2e import _child
from benchmarks.scratch import customers_database, drop
from segmentation import dburl

BIGINT_DB = "segmentation_bench_ids"
TEXT_DB = "segmentation_bench_ids_text"
RUN_DB = "segmentation_bench_ids_run"


def _url(server: str, name: str) -> str:
    return dburl.replace(server, dbname=name)


def _create_from(server: str, name: str, template: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


@contextlib.contextmanager
def _text_copy(server: str) -> Iterator[None]:
    """The bigint database's copy with customer_id retyped to text ids."""
    _create_from(server, TEXT_DB, BIGINT_DB)
    try:
        with psycopg.connect(_url(server, TEXT_DB), autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute(
                "ALTER TABLE public.customers ALTER COLUMN customer_id TYPE text "
                "USING 'cus_' || substr(md5(customer_id::text), 1, 14)"
            )
            conn.execute("VACUUM ANALYZE public.customers")
            print(f"retyped the ids to text in {time.perf_counter() - started:.1f} s", flush=True)
        yield
    finally:
        drop(server, TEXT_DB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind; the median is reported")
    parser.add_argument("--database-url")
    args = parser.parse_args()

    from segmentation import db

    server = args.database_url or db.database_url()
    times: dict[tuple[str, str], list[float]] = {}
    rss: dict[tuple[str, str], float] = {}
    with customers_database(server, BIGINT_DB, args.rows), _text_copy(server):
        for _ in range(args.repeat):
            for ids, template in (("bigint", BIGINT_DB), ("text", TEXT_DB)):
                for stage in ("flow", "nightly"):
                    _create_from(server, RUN_DB, template)
                    try:
                        done = _child(stage, _url(server, RUN_DB), args)
                    finally:
                        drop(server, RUN_DB)
                    times.setdefault((ids, stage), []).append(done["total"])
                    rss[(ids, stage)] = max(rss.get((ids, stage), 0.0), done["rss_mb"])
                    stages = ", ".join(f"{s} {v:.2f}" for s, v in done["stages"].items())
                    print(f"{ids:<7} {stage:<8} {done['total']:7.2f} s  {done['rss_mb']:5.0f} MB  {stages}", flush=True)

    print(f"\n{args.rows:,} customers, k={args.k}, n_init={args.n_init}; median of {args.repeat}")
    print(f"{'run':<8} {'bigint s':>9} {'text s':>9} {'ratio':>6} {'text peak RSS MB':>17}")
    for stage, label in (("flow", "first"), ("nightly", "nightly")):
        bigint, text = (statistics.median(times[(ids, stage)]) for ids in ("bigint", "text"))
        print(f"{label:<8} {bigint:>9.2f} {text:>9.2f} {text / bigint:>6.2f} {rss[('text', stage)]:>17.0f}")


if __name__ == "__main__":
    main()
