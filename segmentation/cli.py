"""The `segmentation` command."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from segmentation import __version__, operations
from segmentation.config import ConfigError
from segmentation.errors import SegmentationError, describe
from segmentation.segmentations import DEFAULT

if TYPE_CHECKING:
    from segmentation.rollback import Switch
    from segmentation.settings import Settings


def _print_applied(applied: Sequence[str]) -> None:
    for filename in applied:
        print(f"applied {filename}")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from segmentation.migrations import ROLES_SQL

    done = operations.upgrade_database()
    _print_applied(done.applied)
    print("database schema is up to date")
    if done.roles:
        print("roles segmentation_writer and segmentation_reader and their grants are in place")
    else:
        print(
            "this login may not create roles, so segmentation_writer and segmentation_reader were not "
            f"created or granted; ask a DBA to run: psql -f {ROLES_SQL}"
        )
    return 0


def cmd_load_csv(args: argparse.Namespace) -> int:
    done = operations.load_csv(Path(args.path), args.table, skip_invalid=args.skip_invalid)
    _print_applied(done.applied)
    report = done.report
    print(f"loaded {report.loaded} customers into {report.table} ({report.inserted} new, {report.updated} updated)")
    if report.problems:
        print(f"skipped {len(report.problems)} invalid rows:")
        for line in report.problem_lines():
            print(f"  {line}")
    return 0


def _progress(line: str) -> None:
    print(line, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    if args.shape == "crm":
        return _generate_crm(args)
    if args.schema is not None:
        raise SegmentationError(
            "--schema is for --shape crm; --shape mall appends to --table (default public.customers)"
        )
    table = args.table or "public.customers"
    done = operations.generate(args.rows, args.seed, table, if_empty=args.if_empty, progress=_progress)
    _print_applied(done.applied)
    if done.report is None:
        print(f"{table} already has customers; nothing generated")
    else:
        print(f"generated {done.report.loaded} customers into {done.report.table}")
    return 0


def _generate_crm(args: argparse.Namespace) -> int:
    if args.table is not None:
        raise SegmentationError(
            f"--table is for --shape mall; --shape crm makes its own tables in --schema (default {operations.CRM_SCHEMA})"
        )
    schema = args.schema or operations.CRM_SCHEMA
    done = operations.generate_crm(args.rows, args.seed, schema, if_empty=args.if_empty, progress=_progress)
    _print_applied(done.applied)
    report = done.report
    if report is None:
        print(f"the CRM tables in schema {schema} already hold rows; nothing generated")
        return 0
    print(
        f"generated {report.customers:,} customers ({report.without_orders:,} without orders) and {report.orders:,} "
        f"orders into {report.name('customers')} and {report.name('orders')}, with the view "
        f"{report.name('customer_rfm')}, in {report.seconds:.1f} s"
    )
    return 0


def _check_settings() -> None:
    """A bad setting (any SEGMENTATION_* variable, the database URL too) is one line here,
    before Prefect starts a flow run."""
    from segmentation.settings import Settings

    Settings.from_env()


def _run_flow(params: dict) -> int:
    """Run the flow, then say what became of its run as the database has it (not as the flow
    returned it): exit 0 when the run published (or was staged), whatever went wrong around
    it; non-zero when it did not, or when that cannot be known (then say how to check)."""
    from segmentation.flows.segmentation import customer_segmentation

    state = customer_segmentation(**params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    ended = state.message or state.name
    try:
        outcome = operations.run_outcome(flow_run_id) if flow_run_id is not None else None
    except (SegmentationError, psycopg.Error) as exc:
        print(
            f"error: the run (Prefect flow run {flow_run_id}) ended with: {ended}; whether it "
            f"published cannot be known now ({describe(exc)}). Check with: segmentation runs",
            file=sys.stderr,
        )
        return 1
    if outcome is not None and outcome.run_id is not None and outcome.status in ("published", "staged"):
        if not state.is_completed():
            # The run was kept before the error that failed the flow run (a connection lost after the publish).
            print(f"note: run {outcome.run_id} is {outcome.status}, although its flow run ended with: {ended}")
        elif state.message:
            # Kept, with an error met at or after that (tasks.run.fail_run), which the message says.
            print(f"note: {state.message}")
        return _show_after_run(outcome.run_id, outcome.status)
    said = None if state.is_completed() else state.message  # a completed flow run's message is not about the run
    known = (outcome.message or f"run {outcome.run_id} is {outcome.status}") if outcome is not None else None
    reason = said or known or state.name
    print(f"error: the run did not publish: {reason}", file=sys.stderr)
    return 1


def _show_after_run(run_id: int, status: str) -> int:
    """The run is kept: exit 0 even when its segments cannot be printed now."""
    try:
        _show(run_id)
    except (SegmentationError, psycopg.Error) as exc:
        print(
            f"run {run_id} is {status}, but its segments cannot be shown now ({exc}); "
            f"show them later with: segmentation show"
        )
    return 0


def _show(run_id: int | None = None, plot: str | None = None, segmentation: str | None = None) -> int:
    found = operations.show(run_id, plot=plot is not None, segmentation=segmentation)
    if found is None:
        if segmentation is None or segmentation == DEFAULT:
            print("no published run yet; start one with: segmentation run")
        else:
            print(
                f"segmentation {segmentation} has no published run yet; start one with: "
                f"segmentation run --segmentation {segmentation}"
            )
        return 1
    if plot:
        _write_plot(found.png(), Path(plot))
    print(found.text())
    if plot:
        print(f"wrote {plot}")
    return 0


def _write_plot(png: bytes, path: Path) -> None:
    try:
        path.write_bytes(png)
    except OSError as exc:
        raise SegmentationError(f"cannot write {path}: {exc.strerror}; choose a writable file path") from None


# Short names kept for the flags people already type.
_FLAG_ALIASES = {"n_clusters": ["--k"]}


def _flow_options(parser: argparse.ArgumentParser) -> None:
    """One flag per flow parameter, from the flow's own parameter schema (what the Prefect UI
    builds its form from): names, types, help and defaults all come from the flow's
    signature and docstring. A flag left out is not passed, so the flow's default applies."""
    from segmentation.flows.segmentation import customer_segmentation

    for name, spec in customer_segmentation.parameters.properties.items():
        flags = [f"--{name.replace('_', '-')}", *_FLAG_ALIASES.get(name, [])]
        types = [spec.get("type")] if "type" in spec else [t.get("type") for t in spec.get("anyOf", [])]
        kind = next(t for t in types if t != "null")
        default = spec.get("default")
        shown = ",".join(default) if isinstance(default, list) else "empty" if default is None else default
        help_text = f"{spec.get('description', '')} (default: {shown})".replace("%", "%%")
        options: dict = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind == "boolean":
            options["action"] = argparse.BooleanOptionalAction
        elif name == "features":
            options.update(type=_features, metavar="A,B:log1p,... or JSON")
        elif kind == "array":
            options.update(type=_comma_separated, metavar="A,B,...")
        else:
            options["type"] = {"integer": int, "number": float, "string": str}[kind]
        parser.add_argument(*flags, **options)


def _features(text: str) -> list[str | dict]:
    """--features: compact strings separated by commas, or a JSON list (segmentation.core.feature_spec)."""
    from segmentation.core import feature_spec

    try:
        items = feature_spec.from_text(text)
        feature_spec.parse_all(items)  # a bad spec is refused here, before a run is started
        return items
    except SegmentationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _comma_separated(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def cmd_run(args: argparse.Namespace) -> int:
    params = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    _check_settings()
    return _run_flow(params)


def cmd_show(args: argparse.Namespace) -> int:
    return _show(args.run, plot=args.plot, segmentation=args.segmentation)


def _configured(given: str | None) -> list | None:
    """The segmentations file's deployments (--config, else SEGMENTATION_CONFIG), checked whole;
    None without a file."""
    from segmentation import config

    path = config.config_path(given)
    return None if path is None else config.load(path)


def _describe_configured(configured: list) -> str:
    return "; ".join(f"customer-segmentation/{d.name} ({d.schedule.cron}, {d.schedule.timezone})" for d in configured)


def cmd_serve(args: argparse.Namespace) -> int:
    from segmentation.flows.deployment import ScheduleSettings, serve

    configured = _configured(args.config)  # every mistake in the file, one line each, before Prefect starts
    schedule = None if configured else ScheduleSettings.from_env()  # a bad schedule is one line here too
    _print_applied(operations.migrate())  # an unreachable database too: better now than at 02:00
    if configured:
        print(f"serving {len(configured)} segmentations: {_describe_configured(configured)}", flush=True)
    serve(schedule, configured)
    return 0


DEMO_TABLE = "public.customers"


def cmd_demo(args: argparse.Namespace) -> int:
    _check_settings()
    done = operations.generate(args.rows, seed=0, table=DEMO_TABLE, if_empty=True)
    _print_applied(done.applied)
    if done.report is None:
        print(f"{DEMO_TABLE} already has customers; segmenting those")
    else:
        print(f"generated {args.rows} demo customers into {DEMO_TABLE}")
    return _run_flow({})


def _print_switch(switch: Switch) -> int:
    was = f" (run {switch.from_run_id} was)" if switch.from_run_id is not None else ""
    of = "" if switch.segmentation == DEFAULT else f" of segmentation {switch.segmentation}"
    print(f"run {switch.run_id} is current{of}{was}: {switch.action}")
    return _show(switch.run_id)


def cmd_deploy(args: argparse.Namespace) -> int:
    from segmentation.flows.deployment import DEPLOYMENT_NAME, deploy
    from segmentation.flows.segmentation import FLOW_NAME
    from segmentation.tasks.approval import APPROVE_FLOW_NAME

    configured = _configured(args.config)
    if configured:
        ids = deploy(args.pool, args.image, configured=configured)
        print(
            f"deployed {_describe_configured(configured)}, each with {APPROVE_FLOW_NAME}/<name> beside it, to work "
            f"pool {args.pool!r} ({', '.join(ids)}): start a worker with `prefect worker start --pool {args.pool}` "
            "where this package and SEGMENTATION_DATABASE_URL are"
        )
        return 0
    [deployment_id] = deploy(args.pool, args.image)
    print(
        f"deployed {FLOW_NAME}/{DEPLOYMENT_NAME} ({deployment_id}), and {APPROVE_FLOW_NAME}/{DEPLOYMENT_NAME} "
        f"beside it, to work pool {args.pool!r}: start a worker "
        f"with `prefect worker start --pool {args.pool}` where this package and SEGMENTATION_DATABASE_URL are"
    )
    return 0


def cmd_alerts_install(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from segmentation.events import ALERT_ON, AUTOMATION_NAME, install_alerts

    if args.stale_after < 0:
        raise SegmentationError(f"--stale-after is {args.stale_after:g}; give hours, 0 or more (0: no such alert)")
    stale = timedelta(hours=args.stale_after) if args.stale_after > 0 else None
    if stale is not None and stale < timedelta(seconds=10):
        raise SegmentationError("--stale-after is under 10 seconds, the least Prefect watches for; give more hours")
    names = operations.segmentation_names() if stale is not None else []
    for automation, created in install_alerts(args.block, names, stale):
        what = (
            f"for every {' or '.join(ALERT_ON)} run"
            if automation.name == AUTOMATION_NAME
            else f"when no run is published for {args.stale_after:g} hours"
        )
        print(
            f"{'created' if created else 'updated'} automation {automation.name!r} ({automation.id}): a notification "
            f"through block {args.block!r} {what}"
        )
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    done = operations.purge(args.customer_id)
    print(
        f"purge {done.purge_id}: erased {done.customers} customer{'s' * (done.customers != 1)} from the segmentation "
        f"schema: {done.assignment_rows} assignment rows, {done.spell_rows} history rows, "
        f"{done.change_rows} change rows, {done.quarantine_rows} quarantined rows (erase them from the source table too, or the next run brings "
        "them back)"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    return _print_switch(operations.rollback(args.reason, to=args.to, force=args.force, segmentation=args.segmentation))


def cmd_promote(args: argparse.Namespace) -> int:
    return _print_switch(operations.promote(args.run_id, args.reason, force=args.force, segmentation=args.segmentation))


def cmd_dbt_sources(args: argparse.Namespace) -> int:
    text = operations.dbt_sources()
    if args.output:
        path = Path(args.output)
        try:
            path.write_text(text)
        except OSError as exc:
            raise SegmentationError(f"cannot write {path}: {exc.strerror}; choose a writable file path") from None
        views = len(re.findall(r"^  - name: ", text, re.M))
        print(f"wrote {path}: the dbt source segmentation, {views} views of segmentation_bi")
    else:
        print(text, end="")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from segmentation.core.run_text import runs_table

    segmentation = args.segmentation or DEFAULT
    listed = operations.list_runs(args.limit, segmentation)
    if listed:
        print(runs_table(listed).plain())
    else:
        flag = "" if segmentation == DEFAULT else f" --segmentation {segmentation}"
        print(f"no runs yet; start one with: segmentation run{flag}")
    return 0


def _embedded_settings() -> Settings:
    from segmentation.settings import DATABASE_URL_ENV, Settings

    settings = Settings.from_env()
    if settings.database_url:
        print(f"note: {DATABASE_URL_ENV} is set, so commands use that database, not the embedded one")
    return settings


def cmd_embedded_status(args: argparse.Namespace) -> int:
    from segmentation import embedded

    print(embedded.status(_embedded_settings()).describe())
    return 0


def cmd_embedded_stop(args: argparse.Namespace) -> int:
    from segmentation import embedded

    stopped = embedded.stop(_embedded_settings())
    if stopped.pid is None:
        print(stopped.describe())
    else:
        print(f"stopped the embedded PostgreSQL (pid {stopped.pid}); its data stays in {stopped.pgdata}")
    return 0


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a segmentations file (YAML): one deployment customer-segmentation/NAME per segmentation, each with "
        "its schedule and parameters (default: SEGMENTATION_CONFIG; without either, the one nightly deployment)",
    )


def _segmentation_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segmentation",
        metavar="NAME",
        help=f"the segmentation (default: {DEFAULT}, or with RUN_ID the run's own); see segmentation_bi.segmentations",
    )


def build_parser(flow_options: bool = True) -> argparse.ArgumentParser:
    """flow_options=False leaves out the run command's flags, which need the flow (and with it
    Prefect, scikit-learn and matplotlib) imported: seconds every other command need not wait."""
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

    p = sub.add_parser(
        "generate",
        help="append synthetic mall-like customers to the source table, or make CRM-shaped tables (--shape crm)",
    )
    p.add_argument("--rows", type=int, required=True, help="customers to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shape",
        choices=("mall", "crm"),
        default="mall",
        help="mall: customers appended to --table; crm: customers with text ids, their orders and the view "
        "customer_rfm, in a new --schema (default mall)",
    )
    p.add_argument("--table", help="--shape mall: target table (default public.customers)")
    p.add_argument("--schema", help=f"--shape crm: the schema to make them in (default {operations.CRM_SCHEMA})")
    p.add_argument(
        "--if-empty",
        action="store_true",
        help="generate only when the table (--shape crm: the schema's tables) has no rows yet",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "run",
        help="run the flow once now and print the published segments",
        description="Run the flow once now, with any of its parameters, and print the published segments. "
        "Exits non-zero when the run did not publish.",
    )
    if flow_options:
        _flow_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "rollback",
        help="make an earlier run current again, without retraining (default: the run current before this one)",
    )
    p.add_argument("--to", type=int, metavar="RUN_ID", help="the run to make current (see: segmentation runs)")
    p.add_argument("--reason", required=True, help="why, recorded with the switch")
    p.add_argument("--force", action="store_true", help="also a run the quality gate rejected")
    _segmentation_option(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("promote", help="make a staged run (segmentation run --no-publish) current")
    p.add_argument("run_id", type=int, metavar="RUN_ID")
    p.add_argument("--reason", required=True, help="why, recorded with the switch")
    p.add_argument("--force", action="store_true", help="also a run the quality gate rejected")
    _segmentation_option(p)
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "deploy", help="register the nightly deployment with a work pool (instead of `segmentation serve`)"
    )
    p.add_argument("--pool", required=True, help="the work pool (process, or Docker with --image)")
    p.add_argument("--image", help="the image a Docker work pool runs the flow in (this project's image)")
    _config_option(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "alerts", help="notifications for runs that were rejected or failed, and publishes that did not happen"
    )
    asub = p.add_subparsers(dest="alerts_command", required=True)
    p = asub.add_parser(
        "install", help="create (or update) a Prefect automation that notifies through a block on every bad run"
    )
    p.add_argument("--block", required=True, help="the notification block's name (or <type>/<name>)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=26.0,
        metavar="HOURS",
        help="also notify when a segmentation publishes no run for this many hours, one automation per "
        "segmentation in the database (default 26; 0: not)",
    )
    p.set_defaults(func=cmd_alerts_install)

    p = sub.add_parser(
        "purge",
        help="erase customers from the segmentation schema (assignments, history, quarantine), on request",
    )
    p.add_argument(
        "--customer-id",
        action="append",
        required=True,
        metavar="ID",
        help="a customer to erase, by its id in the source: an integer, text or uuid (repeatable)",
    )
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser(
        "runs", help="list the newest runs: status, figures, which is current, which can be made current"
    )
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    _segmentation_option(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "dbt-sources",
        help="print a dbt sources.yml for segmentation_bi: every view and column, described by its COMMENT",
    )
    p.add_argument("--output", metavar="FILE", help="write it to FILE instead (e.g. models/segmentation/sources.yml)")
    p.set_defaults(func=cmd_dbt_sources)

    p = sub.add_parser("show", help="print the current segments (or another run's, with --run)")
    p.add_argument(
        "--run",
        type=int,
        metavar="RUN_ID",
        help="a run other than the current one, e.g. a rejected one and its decision",
    )
    p.add_argument("--plot", metavar="FILE", help="also write the run's picture (PNG) to FILE")
    _segmentation_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "serve",
        help="serve the flow as deployment customer-segmentation/nightly on its schedule "
        "(SEGMENTATION_SCHEDULE, SEGMENTATION_TIMEZONE) until stopped; with --config, one deployment "
        "customer-segmentation/NAME per segmentation of the file",
    )
    _config_option(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "embedded",
        help="the embedded PostgreSQL used when SEGMENTATION_DATABASE_URL is unset (it keeps running between commands)",
    )
    esub = p.add_subparsers(dest="embedded_command", required=True, metavar="ACTION")
    esub.add_parser("status", help="whether it is running, its process and its data directory").set_defaults(
        func=cmd_embedded_status
    )
    esub.add_parser("stop", help="stop it (its data stays; the next command starts it again)").set_defaults(
        func=cmd_embedded_stop
    )
    return parser


EPHEMERAL_STARTUP_TIMEOUT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Without PREFECT_API_URL, Prefect starts a temporary API server, which it gives 20 s by
    # default: on a busy machine that was seen to be too little.
    os.environ.setdefault(EPHEMERAL_STARTUP_TIMEOUT, "60")
    args = build_parser(flow_options=argv[:1] == ["run"]).parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:  # each mistake in the file is a line of its own
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except SegmentationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not str(exc).startswith("Timed out while attempting to connect to ephemeral Prefect API server"):
            raise
        print(
            f"error: Prefect's temporary API server did not start within {os.environ[EPHEMERAL_STARTUP_TIMEOUT]} s; "
            f"set {EPHEMERAL_STARTUP_TIMEOUT} higher, or PREFECT_API_URL to a running Prefect server",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
