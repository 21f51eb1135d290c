"""What each command of the command line does, as functions Python code may call as well: each
takes plain arguments, opens and closes its own connection, and returns what it found or did;
none prints. segmentation.cli parses the arguments, calls one of these and prints the result.

The schema: upgrade_database, migrate, load_csv, generate and generate_crm apply pending
migrations (so does a flow run, at its start); every other function only checks the schema's version
(migrations.require_current) and, on a database without the schema or behind this version,
stops with one line naming `segmentation db upgrade`. Reading never changes the schema.

Who commits: the functions called here, each in transactions of its own (see segmentation.db);
show and list_runs read in one transaction of their own.

The modules behind most functions import pandas, scikit-learn or matplotlib: they are imported
where they are used, so a command waits only for what it needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import psycopg

from segmentation import db, migrations
from segmentation.errors import SegmentationError
from segmentation.outcome import gate_verdict
from segmentation.segmentations import DEFAULT, check_name

if TYPE_CHECKING:
    from segmentation.crm_shape import CrmReport
    from segmentation.loading import LoadReport
    from segmentation.outcome import Outcome
    from segmentation.purge import Purge
    from segmentation.rollback import Switch
    from segmentation.store.readback import RunReport


def _connect() -> psycopg.Connection:
    return db.connect(db.database_url())


@contextmanager
def _current_schema() -> Iterator[psycopg.Connection]:
    """A connection to a database whose schema is this version's, never changing it."""
    with _connect() as conn:
        migrations.require_current(conn)
        yield conn


def _migrate(conn: psycopg.Connection) -> tuple[str, ...]:
    applied, _ = migrations.upgrade_with_roles(conn)
    return tuple(m.filename for m in applied)


@dataclass(frozen=True)
class Upgrade:
    applied: tuple[str, ...]  # the migrations applied now (empty: the schema was up to date)
    roles: bool  # False: this login may not create roles, so a DBA applies migrations.ROLES_SQL


def upgrade_database() -> Upgrade:
    """Apply pending migrations, then the roles and their grants when this login may."""
    with _connect() as conn:
        # Not _migrate: that applies the roles too when it applied a migration, and here they are applied anyway.
        applied = tuple(m.filename for m in migrations.upgrade(conn))
        return Upgrade(applied, migrations.apply_roles(conn))


def migrate() -> tuple[str, ...]:
    """Apply pending migrations (and the roles, when any were applied: migrations.upgrade_with_roles);
    returns those applied now."""
    with _connect() as conn:
        return _migrate(conn)


@dataclass(frozen=True)
class Loaded:
    applied: tuple[str, ...]  # the migrations applied first
    report: LoadReport


@dataclass(frozen=True)
class Generated:
    applied: tuple[str, ...]  # the migrations applied first
    report: LoadReport | None  # None: nothing generated (if_empty, and the table had customers)


def load_csv(path: Path, table: str = "public.customers", skip_invalid: bool = False) -> Loaded:
    from segmentation import loading

    with _connect() as conn:
        applied = _migrate(conn)
        return Loaded(applied, loading.load_csv(conn, path, table, skip_invalid=skip_invalid))


def generate(
    rows: int,
    seed: int = 0,
    table: str = "public.customers",
    *,
    if_empty: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Generated:
    """Append synthetic customers; with if_empty, only into a table without customers."""
    from segmentation import loading

    with _connect() as conn:
        applied = _migrate(conn)
        if if_empty and loading.has_customers(conn, table):
            return Generated(applied, None)
        return Generated(applied, loading.generate_customers(conn, rows, seed, table, report=progress))


CRM_SCHEMA = "crm"


@dataclass(frozen=True)
class GeneratedCrm:
    applied: tuple[str, ...]  # the migrations applied first
    report: CrmReport | None  # None: nothing generated (if_empty, and the schema's tables held rows)


def generate_crm(
    rows: int,
    seed: int = 0,
    schema: str = CRM_SCHEMA,
    *,
    if_empty: bool = False,
    progress: Callable[[str], None] | None = None,
) -> GeneratedCrm:
    """Make the CRM shape in its own schema: customers with text ids, their orders and the view
    customer_rfm (segmentation.crm_shape); refused when its tables hold rows, unless if_empty."""
    from segmentation import crm_shape

    with _connect() as conn:
        applied = _migrate(conn)
        return GeneratedCrm(applied, crm_shape.generate(conn, rows, seed, schema, if_empty=if_empty, report=progress))


def run_outcome(flow_run_id: str | UUID) -> Outcome | None:
    """What became of the run a Prefect flow run began, as the database has it; None when it
    began none."""
    from segmentation.store import runs

    with _connect() as conn:
        try:
            return runs.outcome_of(conn, flow_run_id=flow_run_id)
        except psycopg.errors.UndefinedTable:
            return None  # no schema: the flow run stopped before it could begin a run


def run_outcome_by_id(run_id: int) -> Outcome | None:
    """What became of run run_id, as the database has it; None when there is no such run."""
    from segmentation.store import runs

    with _current_schema() as conn:
        return runs.outcome_of(conn, run_id=run_id)


@dataclass(frozen=True)
class ApprovalRequest:
    outcome: Outcome  # the rejected run, as the database has it
    report: RunReport  # the run read back, as its report shows it


def approval_request(run_id: int) -> ApprovalRequest:
    """A run the quality gate rejected, to ask a person about; refused for a run that is not
    rejected (made current meanwhile, say): there is nothing to decide."""
    from segmentation.store import runs

    found = read_run(run_id)
    with _current_schema() as conn:
        outcome = runs.outcome_of(conn, run_id=run_id)
    if outcome is None or found is None:
        raise SegmentationError(f"there is no run {run_id}; `segmentation runs` lists the runs")
    if outcome.status != "rejected":
        raise SegmentationError(f"run {run_id} is {outcome.status}, not rejected: there is nothing to approve")
    # The gate's verdict, without the advice to promote the run by hand that its stored error ends with:
    # the person deciding answers here instead.
    return ApprovalRequest(replace(outcome, reasons=(gate_verdict(run_id, outcome.quality_issues),)), found)


def approval_reason(note: str) -> str:
    """How a person's approval is recorded as the reason of the switch (current_run_log)."""
    return f"approved in the Prefect UI: {note.strip() or '(no note)'}"


def decide(run_id: int, decision: str, note: str, flow_run_id: str | None = None) -> Outcome:
    """A person's answer to the approval of a rejected run, recorded in segmentation.approvals:
    `approved` makes it current through the promote path (under the run lock), unless a newer
    run was published meanwhile; `rejected` and `no answer` keep it rejected. Returns what
    became of the run."""
    from segmentation.rollback import make_current
    from segmentation.store import approvals, runs

    with _current_schema() as conn:
        # Recorded first: a person's decision stands even when publishing it is then refused.
        approvals.record(conn, run_id, decision, note.strip(), flow_run_id)
        if decision == "approved":
            make_current(conn, run_id=run_id, reason=approval_reason(note), force=True, only_if_newest=True)
        outcome = runs.outcome_of(conn, run_id=run_id)
    assert outcome is not None
    return outcome


def show(run_id: int | None = None, *, plot: bool = False, segmentation: str | None = None) -> RunReport | None:
    """A run read back (default: the current run of `segmentation`, default `default`); None when
    that segmentation has published no run. plot: with a sample of its customers, for
    RunReport.png."""
    from segmentation.store import runs

    if segmentation is not None:
        check_name(segmentation)
    if run_id is None:
        with _current_schema() as conn:
            _require_segmentation(conn, segmentation or DEFAULT)
            run_id = runs.current_run_id(conn, segmentation or DEFAULT)
        if run_id is None:
            return None
    found = read_run(run_id, plot=plot)
    if found is None:
        raise SegmentationError(f"there is no run {run_id}; `segmentation runs` lists the runs")
    if segmentation is not None and found.run.get("segmentation") != segmentation:
        raise SegmentationError(
            f"run {run_id} is a run of segmentation {found.run.get('segmentation')}, not {segmentation}; "
            f"`segmentation runs --segmentation {segmentation}` lists {segmentation}'s runs"
        )
    return found


def _require_segmentation(conn: psycopg.Connection, segmentation: str) -> None:
    """Refuse, in one line, a segmentation that has never run here."""
    from segmentation.db import scalar

    if not scalar(conn, "SELECT EXISTS (SELECT FROM segmentation.segmentations WHERE name = %s)", (segmentation,)):
        known = ", ".join(r[0] for r in conn.execute("SELECT name FROM segmentation.segmentations ORDER BY name"))
        raise SegmentationError(
            f"there is no segmentation {segmentation} in this database (there are: {known}); it is created when "
            f"it first runs: segmentation run --segmentation {segmentation}"
        )


def read_run(run_id: int, *, plot: bool = False) -> RunReport | None:
    """Run run_id read back in one transaction, as `segmentation show` and the run report show
    it (None: no such run); customers are sampled only for a picture (plot)."""
    from segmentation.store import readback

    with _current_schema() as conn, conn.transaction():
        return readback.load(conn, run_id, sample_size=readback.PLOT_SAMPLE_SIZE if plot else 0)


def dbt_sources() -> str:
    """sources.yml for dbt: the views of segmentation_bi and their COMMENTs (segmentation.dbt_sources)."""
    from segmentation import dbt_sources as dbt

    with _current_schema() as conn, conn.transaction():
        return dbt.render(dbt.read_views(conn), database=conn.info.dbname)


def segmentation_names() -> list[str]:
    """Every segmentation the database knows, by name (the default first)."""
    with _current_schema() as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM segmentation.segmentations ORDER BY name")]
    return sorted(set(names) | {DEFAULT}, key=lambda n: (n != DEFAULT, n))


def list_runs(limit: int = 20, segmentation: str = DEFAULT) -> list[dict]:
    """The segmentation's newest runs, newest first, as segmentation.store.readback.recent_runs
    has them."""
    from segmentation.store import readback

    check_name(segmentation)
    with _current_schema() as conn, conn.transaction():
        _require_segmentation(conn, segmentation)
        return readback.recent_runs(conn, limit, segmentation)


def rollback(reason: str, *, to: int | None = None, force: bool = False, segmentation: str | None = None) -> Switch:
    """Make run `to` current again in its segmentation (default: the run current in
    `segmentation` before its current one)."""
    from segmentation.rollback import make_current

    if segmentation is not None:
        check_name(segmentation)
    with _current_schema() as conn:
        if segmentation is not None:
            _require_segmentation(conn, segmentation)
        return make_current(conn, run_id=to, reason=reason, force=force, segmentation=segmentation)


def promote(run_id: int, reason: str, *, force: bool = False, segmentation: str | None = None) -> Switch:
    """Make a staged run (or, with force, a rejected one) current in its segmentation."""
    from segmentation.rollback import make_current

    if segmentation is not None:
        check_name(segmentation)
    with _current_schema() as conn:
        return make_current(conn, run_id=run_id, reason=reason, force=force, segmentation=segmentation)


def purge(customer_ids: Sequence[str | int]) -> Purge:
    """Erase customers from the segmentation schema (not from the source table)."""
    from segmentation import purge as erasure

    with _current_schema() as conn:
        return erasure.purge(conn, customer_ids)
