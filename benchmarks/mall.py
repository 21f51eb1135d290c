"""Times flow runs on the 200 Kaggle Mall customers, not counting Prefect's start-up.

    python -m benchmarks.mall [PATH_TO_Mall_Customers.csv]

Uses a scratch database `segmentation_bench_mall` on SEGMENTATION_DATABASE_URL's server (or
the embedded one), dropped afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from segmentation import dburl

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "Mall_Customers.csv"
DB = "segmentation_bench_mall"


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from segmentation import db
    from segmentation.loading import load_csv

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    server = db.database_url()
    url = dburl.replace(server, dbname=DB)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    os.environ["SEGMENTATION_DATABASE_URL"] = url
    try:
        from segmentation import migrations
        from segmentation.flows.segmentation import customer_segmentation

        with psycopg.connect(url) as conn:
            migrations.upgrade(conn)
            load_csv(conn, path)
        customer_segmentation(n_clusters=5, features=["annual_income", "spending_score"])  # starts Prefect
        for label, params in [("k=5", {"n_clusters": 5}), ("automatic k (2..10)", {})]:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                customer_segmentation(features=["annual_income", "spending_score"], **params)
                times.append(time.perf_counter() - start)
            print(f"{label:<22} runs: {', '.join(f'{t:.2f} s' for t in times)}", file=sys.stderr)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


if __name__ == "__main__":
    main()
