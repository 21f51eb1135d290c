"""The `segmentation` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from segmentation import __version__
import psycopg

from segmentation.errors import SegmentationError, describe

log = logging.getLogger("segmentation")


def _connect():
    from segmentation import db

    return db.connect(db.database_url())


def _upgrade(conn) -> None:
    from segmentation import migrations

    for migration in migrations.upgrade(conn):
        print(f"applied {migration.path.name}")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from segmentation import migrations

    with _connect() as conn:
        _upgrade(conn)
        roles = migrations.apply_roles(conn)
    print("database schema is up to date")
    if roles:
        print("roles segmentation_writer and segmentation_reader and their grants are in place")
    else:
        print(
            "this login may not create roles, so segmentation_writer and segmentation_reader were not "
            f"created or granted; ask a DBA to run: psql -f {migrations.ROLES_SQL}"
        )
    return 0


def cmd_load_csv(args: argparse.Namespace) -> int:
    from segmentation.loading import load_csv

    with _connect() as conn:
        _upgrade(conn)
        report = load_csv(conn, Path(args.path), args.table, skip_invalid=args.skip_invalid)
    print(f"loaded {report.loaded} customers into {report.table} ({report.inserted} new, {report.updated} updated)")
    if report.problems:
        print(f"skipped {len(report.problems)} invalid rows:")
        for line in report.problem_lines():
            print(f"  {line}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from segmentation.loading import generate_customers

    with _connect() as conn:
        _upgrade(conn)
        if args.if_empty and _has_rows(conn, args.table):
            print(f"{args.table} already has customers; nothing generated")
            return 0
        report = generate_customers(conn, args.rows, args.seed, args.table)
    print(f"generated {report.loaded} customers into {report.table}")
    return 0


def _has_rows(conn, table: str) -> bool:
    from psycopg import sql

    from segmentation.db import parse_table_name

    name = parse_table_name(table)
    if conn.execute("SELECT to_regclass(%s)", (name.identifier().as_string(conn),)).fetchone()[0] is None:
        return False  # generate reports a missing table with what exists
    found = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(name.identifier())).fetchone()[0]
    conn.commit()
    return found


def _run_flow(params: dict) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.segmentation import customer_segmentation

    state = customer_segmentation(**params, return_state=True)
    if not state.is_completed():
        print(f"error: the run did not publish: {state.message or state.name}", file=sys.stderr)
        return 1
    result = state.result()
    return _show(result["run_id"])


def _show(run_id: int | None = None, plot: str | None = None) -> int:
    from segmentation import report, run_report

    with _connect() as conn:
        _upgrade(conn)
        run_id = report.current_run_id(conn) if run_id is None else run_id
        if run_id is None:
            print("no published run yet; start one with: segmentation run")
            return 1
        # The same read as the run report's; customers are sampled only for a picture.
        found = run_report.load(conn, run_id, sample_size=run_report.PLOT_SAMPLE_SIZE if plot else 0)
    if plot:
        _write_plot(found.png(), Path(plot))
    print(report.describe_run(found.run))
    print(report.format_segments(found.segments, found.centroids, found.features))
    if plot:
        print(f"wrote {plot}")
    return 0


def _write_plot(png: bytes, path: Path) -> None:
    try:
        path.write_bytes(png)
    except OSError as exc:
        raise SegmentationError(f"cannot write {path}: {exc.strerror}; choose a writable file path") from None


def cmd_run(args: argparse.Namespace) -> int:
    params = {"n_clusters": args.k, "k_min": args.k_min, "k_max": args.k_max, "random_state": args.random_state,
              "n_init": args.n_init, "source_table": args.source_table, "id_column": args.id_column,
              "force_publish": args.force_publish}
    if args.features:
        params["features"] = [f.strip() for f in args.features.split(",") if f.strip()]
    return _run_flow(params)


def cmd_show(args: argparse.Namespace) -> int:
    return _show(plot=args.plot)


def cmd_serve(args: argparse.Namespace) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.deployment import ScheduleSettings, serve

    schedule = ScheduleSettings.from_env()  # a bad schedule is one line here, before Prefect starts
    with _connect() as conn:  # an unreachable database too: better now than at 02:00
        _upgrade(conn)
    serve(schedule)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from segmentation.loading import generate_customers

    with _connect() as conn:
        _upgrade(conn)
        empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM public.customers)").fetchone()[0]
        conn.commit()
        if empty:
            generate_customers(conn, args.rows, seed=0)
            print(f"generated {args.rows} demo customers into public.customers")
        else:
            print("public.customers already has customers; segmenting those")
    return _run_flow({})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segmentation",
        description="Nightly customer segmentation on PostgreSQL. Database: SEGMENTATION_DATABASE_URL, "
        "or an embedded PostgreSQL when it is unset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="generate demo customers if there are none, run once, print the segments")
    p.add_argument("--rows", type=int, default=2000, help="demo customers to generate (default 2000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("db", help="database schema")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dbsub.add_parser("upgrade", help="apply the SQL migrations in sql/").set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("load-csv", help="upsert a Mall-Customers-shaped CSV file into the source table")
    p.add_argument("path")
    p.add_argument("--table", default="public.customers", help="target table (default public.customers)")
    p.add_argument("--skip-invalid", action="store_true", help="load the valid rows and report the others")
    p.set_defaults(func=cmd_load_csv)

    p = sub.add_parser("generate", help="append synthetic mall-like customers to the source table")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default="public.customers", help="target table (default public.customers)")
    p.add_argument("--if-empty", action="store_true", help="generate only when the table has no customers yet")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("run", help="run the flow once now and print the published segments")
    p.add_argument("--k", type=int, default=None, help="number of segments (default: chosen by silhouette)")
    p.add_argument("--k-min", type=int, default=2)
    p.add_argument("--k-max", type=int, default=10)
    p.add_argument("--features", help="comma-separated feature columns (default age,annual_income,spending_score)")
    p.add_argument("--source-table", default="public.customers")
    p.add_argument("--id-column", default="customer_id")
    p.add_argument("--random-state", type=int, default=42)
    p.add_argument("--n-init", type=int, default=10)
    p.add_argument("--force-publish", action="store_true", help="publish even if the quality gate fails")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("show", help="print the current segments")
    p.add_argument("--plot", metavar="FILE", help="also write the run's picture (PNG) to FILE")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "serve",
        help="serve the flow as deployment customer-segmentation/nightly on its schedule "
        "(SEGMENTATION_SCHEDULE, SEGMENTATION_TIMEZONE) until stopped",
    )
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SegmentationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
