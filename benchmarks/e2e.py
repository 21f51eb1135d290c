"""End-to-end benchmark on generated customers, in one run on the same data:

1. the project's flow (n_clusters fixed), per stage, with peak RSS, not counting Prefect's start-up;
2. the notebook route: pandas.read_sql, StandardScaler + KMeans, DataFrame.to_sql;
3. the floor: binary COPY out of the feature columns, one KMeans fit with the same settings
   (scikit-learn's KMeans(n_clusters=k, n_init=n_init), on as many rows as the flow trains
   on), binary COPY in of the assignments.

The flow's own fit compares its n_init starts on a sample and refines the best on all rows
(segmentation.core.model.fit_kmeans), so it can beat the floor's fit. To show that this is
not bought with a worse model, the floor stage also times the flow's fit on the same data
(outside the floor's total), and both inertias are printed.

With --nightly, also a second flow run on the same data (the nightly case: segment matching,
warm start and the drift comparison with the first run), timed after a VACUUM (ANALYZE) of the
first run's tables, as autovacuum leaves them by the next night. Each route runs in its own process so
its peak RSS is its own.

    python -m benchmarks.e2e --rows 1000000 --repeat 3 --nightly
    python -m benchmarks.e2e --rows 10000000 --skip-notebook --nightly

The database: --database-url, else SEGMENTATION_DATABASE_URL, else the embedded server. A
scratch database `segmentation_bench` is created on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import psycopg
from psycopg import sql

from benchmarks.scratch import customers_database
from segmentation import dburl

FEATURES = ["age", "annual_income", "spending_score"]
BENCH_DB = "segmentation_bench"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _kmeans(X: np.ndarray, k: int, n_init: int, random_state: int):
    """The plain fit: n_init starts, each run to convergence on every row."""
    from segmentation.core.model import Scaler, fit_kmeans

    scaler = Scaler.fit(X)
    return scaler, fit_kmeans(scaler.transform(X), k, random_state, n_init, to_fixed_point=False)


def _flow_fit(X: np.ndarray, k: int, n_init: int, random_state: int):
    """The flow's fit: n_init starts compared on the k-selection sample, the best refined."""
    from segmentation.core.model import Scaler, fit_kmeans
    from segmentation.settings import Settings

    scaler = Scaler.fit(X)
    return scaler, fit_kmeans(
        scaler.transform(X), k, random_state, n_init, start_sample_size=Settings.from_env().k_selection_sample_size
    )


def stage_flow(url: str, k: int, n_init: int, nightly: bool = False) -> dict:
    os.environ["SEGMENTATION_DATABASE_URL"] = url
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from segmentation.flows.segmentation import customer_segmentation

    @flow
    def warm_up() -> None:
        """Starts Prefect's API so its start-up is not counted."""

    warm_up()
    if nightly:  # a first run to compare with: the timed run then matches, warm-starts and measures drift
        first = customer_segmentation(n_clusters=k, n_init=n_init, return_state=True)
        if not first.is_completed():
            raise SystemExit(f"first flow run failed: {first.message}")
        # What autovacuum does in the day between two nightly runs (the first run's tables
        # visible-all and analysed), done now rather than during the timed run.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
    start = time.perf_counter()
    state = customer_segmentation(n_clusters=k, n_init=n_init, return_state=True)
    total = time.perf_counter() - start
    if not state.is_completed():
        raise SystemExit(f"flow failed: {state.message}")
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    stages = {tr.name.rsplit("-", 1)[0]: tr.total_run_time.total_seconds() for tr in task_runs}
    result = state.result()
    return {
        "total": total,
        "stages": stages,
        "rss_mb": _rss_mb(),
        "n": result["n_customers"],
        "inertia": result["inertia"],
        "recorded": (flow_run.end_time - flow_run.start_time).total_seconds(),
    }


def stage_notebook(url: str, k: int, n_init: int) -> dict:
    import pandas as pd
    from sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url))
    t0 = time.perf_counter()
    frame = pd.read_sql("SELECT * FROM customers", engine)
    t1 = time.perf_counter()
    _, model = _kmeans(frame[FEATURES].to_numpy(dtype=float), k, n_init, 42)
    frame["segment_id"] = model.labels_ + 1
    t2 = time.perf_counter()
    frame[["customer_id", "segment_id"]].to_sql("notebook_segments", engine, if_exists="replace", index=False)
    t3 = time.perf_counter()
    engine.dispose()
    return {
        "total": t3 - t0,
        "stages": {"read_sql": t1 - t0, "kmeans": t2 - t1, "to_sql": t3 - t2},
        "rss_mb": _rss_mb(),
        "n": len(frame),
    }


def stage_floor(url: str, k: int, n_init: int, train_rows: int) -> dict:
    from segmentation.core.binary_copy import HEADER, TRAILER, Decoder, encode_rows
    from segmentation.core.model import assign
    from segmentation.source.copy_out import copy_out

    fields = [("customer_id", "int8"), *[(f, "float8") for f in FEATURES]]
    select = sql.SQL("COPY (SELECT customer_id, {} FROM customers) TO STDOUT (FORMAT BINARY)").format(
        sql.SQL(", ").join(sql.SQL("{}::float8").format(sql.Identifier(f)) for f in FEATURES)
    )
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        # The flow's own COPY reader, so the floor is not slowed by psycopg's per-row wait.
        buf = b"".join(copy_out(conn, select, 1 << 26))
        parts = Decoder(fields).feed(buf)
        del buf
        ids = parts["customer_id"]
        X = np.column_stack([parts[f] for f in FEATURES])
        t1 = time.perf_counter()
        scaler, model = _kmeans(X[:train_rows], k, n_init, 42)
        labels, distances = assign(model.cluster_centers_, scaler.transform(X))
        t2 = time.perf_counter()
        # A regular table like the flow's: a temporary one would skip the WAL and flatter the floor.
        conn.execute("CREATE TABLE floor_segments (run_id bigint, customer_id bigint, segment_id int, distance float8)")
        out = [("run_id", "int8"), ("customer_id", "int8"), ("segment_id", "int4"), ("distance", "float8")]
        with conn.cursor() as cur, cur.copy("COPY floor_segments FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(HEADER)
            copy.write(
                encode_rows(
                    out,
                    {
                        "run_id": np.ones(len(ids), np.int64),
                        "customer_id": ids,
                        "segment_id": labels + 1,
                        "distance": distances,
                    },
                )
            )
            copy.write(TRAILER)
        conn.commit()
        t3 = time.perf_counter()
    # The same fit + assign with the flow's fit, outside the floor's total.
    t4 = time.perf_counter()
    scaler, flow_fit = _flow_fit(X[:train_rows], k, n_init, 42)
    assign(flow_fit.cluster_centers_, scaler.transform(X))
    flow_fit_seconds = time.perf_counter() - t4
    return {
        "total": t3 - t0,
        "stages": {"copy_out": t1 - t0, "kmeans_fit+assign": t2 - t1, "copy_in": t3 - t2},
        "rss_mb": _rss_mb(),
        "n": len(ids),
        "inertia": float(model.inertia_),
        "flow_fit_seconds": flow_fit_seconds,
        "flow_fit_inertia": float(flow_fit.inertia_),
    }


def _child(stage: str, url: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.e2e",
        "--stage",
        stage,
        "--database-url",
        url,
        "--k",
        str(args.k),
        "--n-init",
        str(args.n_init),
        "--rows",
        str(args.rows),
    ]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"{stage} stage failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _copy_of(server: str, bench: str) -> Iterator[str]:
    """A fresh copy of the generated database, so every run starts from the same state."""
    name = BENCH_DB + "_run"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        # FILE_COPY checkpoints before copying, so a run does not start with the copy's WAL
        # (about 1 GB at 10M customers) waiting to be checkpointed under it.
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(BENCH_DB)
            )
        )
    try:
        yield dburl.replace(bench, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--database-url")
    parser.add_argument("--skip-notebook", action="store_true", help="the notebook route (slow at 10M rows)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the flow and the floor this many times, each on a fresh copy of the data; the median run is reported",
    )
    parser.add_argument(
        "--nightly",
        action="store_true",
        help="also time a second flow run on the same data, as every night after the first: "
        "it matches segments, warm-starts and measures drift against the first",
    )
    parser.add_argument("--stage", choices=["flow", "notebook", "floor", "nightly"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:
        from segmentation.settings import Settings

        train_rows = min(args.rows, Settings.from_env().training_sample_size)
        runner = {
            "flow": lambda: stage_flow(args.database_url, args.k, args.n_init),
            "notebook": lambda: stage_notebook(args.database_url, args.k, args.n_init),
            "floor": lambda: stage_floor(args.database_url, args.k, args.n_init, train_rows),
            "nightly": lambda: stage_flow(args.database_url, args.k, args.n_init, nightly=True),
        }[args.stage]
        print(json.dumps(runner()))
        return

    from segmentation import db

    server = db.database_url() if not args.database_url else args.database_url
    with customers_database(server, BENCH_DB, args.rows) as bench:
        results, runs = {}, {"floor": [], "flow": []}
        for _ in range(args.repeat):
            for stage in runs:
                with _copy_of(server, bench) as copy:
                    runs[stage].append(_child(stage, copy, args))
        for stage, done in runs.items():
            results[stage] = sorted(done, key=lambda r: r["total"])[len(done) // 2]
        if args.nightly:
            with _copy_of(server, bench) as copy:
                results["nightly"] = _child("nightly", copy, args)
        if not args.skip_notebook:
            results["notebook"] = _child("notebook", bench, args)

    print(
        f"\n{args.rows:,} customers, k={args.k}, n_init={args.n_init}; {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, PostgreSQL at {dburl.redact(server)}"
    )
    if args.repeat > 1:
        for stage, done in runs.items():
            totals = ", ".join(
                f"{r['total']:.2f}" + (f" (recorded {r['recorded']:.2f})" if "recorded" in r else "") for r in done
            )
            print(f"{stage} runs: {totals} s; the median is shown")
    print(f"{'route':<10} {'seconds':>8} {'peak RSS MB':>12}  stages (s)")
    for name, r in results.items():
        stages = ", ".join(f"{s} {v:.2f}" for s, v in r["stages"].items())
        print(f"{name:<10} {r['total']:>8.2f} {r['rss_mb']:>12.0f}  {stages}")
    for name in ("flow", "nightly"):
        if name in results:
            print(
                f"{name}: Prefect records the run as {results[name]['recorded']:.2f} s (Running to Completed); "
                "the rest of the wall time is the engine's teardown, which waits for its heartbeat "
                "thread's one-second sleep to end"
            )
    flow, floor = results["flow"]["total"], results["floor"]["total"]
    print(f"\nflow / floor    = {flow / floor:.2f}  (target <= 1.3 at 1M)")
    f = results["floor"]
    fit = f["stages"]["kmeans_fit+assign"]
    print(
        f"KMeans: the floor's plain fit + assign {fit:.2f} s, inertia {f['inertia']:.1f}; the flow's fit "
        f"+ assign {f['flow_fit_seconds']:.2f} s, inertia {f['flow_fit_inertia']:.1f} "
        f"({(f['flow_fit_inertia'] - f['inertia']) / f['inertia']:+.2e} relative); the flow's run: inertia "
        f"{results['flow']['inertia']:.1f}"
    )
    fair = floor - fit + f["flow_fit_seconds"]
    print(f"flow / floor with the flow's fit in the floor = {flow / fair:.2f}")
    if "notebook" in results:
        print(f"notebook / flow = {results['notebook']['total'] / flow:.2f}  (target >= 6 at 1M)")


if __name__ == "__main__":
    main()
