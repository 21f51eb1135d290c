"""A flow run's hold on the database: the one owner of a run's connections and transactions.

The flow gets a Run from the start-run task and closes it when it ends; the tasks call its
methods and never see a connection. Every transaction on the run connection is opened and
committed here (a method that writes is one transaction, or two where the second must see the
first committed: `complete` attaches the partition before the publish), except retention's:
`prune` hands the connection to segmentation.store.retention, a series of single statements and
short transactions. The helpers in segmentation.store and segmentation.source run inside them
(see segmentation.db).

A Run belongs to one segmentation (segmentation.segmentations) and holds two connections:
- the run connection (autocommit) holds its segmentation's run lock, a session-level advisory
  lock, from start to close, and does every write;
- the snapshot connection reads the source. Its transaction is REPEATABLE READ READ ONLY,
  set through psycopg's attributes, and begins with the run's first read of the source: the
  catalog lookup, the extract, the quarantine and the scoring pass all read that one version
  of the table. `end_snapshot` ends it as soon as the source is no longer needed.

Every session of a run is on the run connection's server (Run.server, db.server_identity):
after a failover, a session opened anew (the snapshot, a second reader, a range on Dask) would
reach the new primary, where the run's snapshot and uncommitted work are not; it fails the run
instead (db.ServerChanged). Only recording the failure (`fail`) may use another server: the
run's row is wherever the database now answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation import db, migrations
from segmentation.core.comparison import Changes, join
from segmentation.core.input_drift import Distribution
from segmentation.errors import SegmentationError
from segmentation.segmentations import DEFAULT, check_name
from segmentation.settings import Settings
from segmentation.source import catalog, customer_keys, queries, split_read
from segmentation.source.queries import IdRange
from segmentation.source.stream import Chunk, stream_valid
from segmentation.store import change_feed, history, partitions, retention, runs, spells


@dataclass
class RangePass:
    """A scoring pass split into ranges: the snapshot they read in, the previous run they
    compare with (None: they do not), and the bounds of the ranges' ids."""

    snapshot: str
    server: str  # the run's server (db.server_identity): the ranges' sessions must reach it
    compare_with: history.PreviousRun | None
    bounds: IdRange


class Run:
    def __init__(
        self,
        run_id: int,
        settings: Settings,
        url: str,
        conn: psycopg.Connection,
        snapshot: psycopg.Connection,
        segmentation: str = DEFAULT,
        server: str | None = None,
    ):
        self.run_id = run_id
        # The server the run connection reached (db.server_identity): every other session of
        # the run (the snapshot, a second reader, the ranges on Dask) must reach the same one.
        self.server = server if server is not None else db.server_identity(conn)
        self.segmentation = segmentation
        self.settings = settings
        self._url = url  # holds the password: never shown (see __repr__)
        self._conn = conn
        self._snapshot = snapshot
        self._snapshot_ended = False
        self._ids_pending = False
        self._recording: _Recording | None = None
        self._id_bounds: dict[tuple[str, str], tuple[int, int] | None] = {}

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id}, segmentation={self.segmentation!r})"

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Transaction]:
        """A transaction of this Run's own, never a savepoint inside someone else's."""
        if self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise RuntimeError(f"run {self.run_id}: a transaction is already open on the run connection")
        with self._conn.transaction() as transaction:
            yield transaction

    def _source(self) -> psycopg.Connection:
        """The snapshot connection, while the snapshot lasts: a read after end_snapshot would
        silently start a second snapshot."""
        if self._snapshot_ended:
            raise RuntimeError(f"run {self.run_id}: the source was read after the snapshot ended")
        return self._snapshot

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        flow_run_id: str | None,
        source_table: str,
        features: Sequence[str],
        params: dict,
        segmentation: str = DEFAULT,
    ) -> tuple[Run, list[int]]:
        """Take the segmentation's run lock, create the segmentation (its views) when this is its
        first run, mark its runs abandoned by dead processes failed, and record the new run.
        Returns the run and the abandoned run ids."""
        check_name(segmentation)
        url = db.database_url(settings)
        conn = db.connect(url, application_name="segmentation-run")
        try:
            runs.acquire_run_lock(conn, segmentation)
            migrations.add_segmentation(conn, segmentation)
            with conn.transaction():
                abandoned = runs.mark_abandoned(conn, segmentation)
                for run_id in abandoned:
                    partitions.drop_unattached(conn, run_id)
            with conn.transaction():
                run_id = runs.insert_run(
                    conn,
                    flow_run_id=flow_run_id,
                    source_table=source_table,
                    features=features,
                    params=params,
                    segmentation=segmentation,
                )
            server = db.server_identity(conn)
            snapshot = db.connect_snapshot(url, application_name="segmentation-snapshot", server=server)
        except BaseException:
            conn.close()  # also releases the run lock
            raise
        return cls(run_id, settings, url, conn, snapshot, segmentation, server), abandoned

    # The source, read in the run's snapshot.

    def resolve_source(self, source_table: str, id_column: str, features: Sequence) -> catalog.Source:
        """Look the source up in the snapshot's catalog, and record its names as the catalog
        spells them, so runs compare equal however they were typed. days_since counts days
        before the run's start."""
        as_of = db.scalar(self._conn, "SELECT started_at FROM segmentation.runs WHERE run_id = %s", (self.run_id,))
        source = catalog.resolve_source(self._source(), source_table, id_column, features, as_of)
        with self._transaction():
            runs.record_source(self._conn, self.run_id, str(source.table), source.features, source.id_type)
        # Ids keyed by hash are recorded after the scoring pass, in the snapshot (record_customer_ids).
        self._ids_pending = source.id_type is not None
        return source

    def record_customer_ids(
        self, source: catalog.Source, arrivals: np.ndarray | None = None, compared_with: int | None = None
    ) -> int:
        """For ids keyed by hash, record the snapshot's ids not recorded yet in
        segmentation.customer_ids (segmentation.source.customer_keys), for the BI views to speak
        them, then end the snapshot; returns how many were new. arrivals: the keys of this run not
        in run compared_with, when the run compared itself with it customer by customer: only
        those are looked up, when compared_with read its ids as this run does; else every id, in
        the session begin_recording_ids started (or starts now). Either way a write in the
        snapshot's own view of the source, in a REPEATABLE READ transaction that imports it.
        Nothing to do for integer ids."""
        if source.id_type is None:
            return 0
        if arrivals is not None and compared_with is not None:
            same = db.scalar(
                self._conn,
                "SELECT id_type IS NOT DISTINCT FROM %s FROM segmentation.runs WHERE run_id = %s",
                (source.id_type, compared_with),
            )
            if not same:
                arrivals = None
        if arrivals is None:
            self.begin_recording_ids(source)  # every id, in its own session (unless begun already)
        try:
            if self._recording is not None:
                return self._recording.result()
            assert arrivals is not None
            return self._record_arrivals(source, arrivals)
        finally:
            self._recording = None
            self._ids_pending = False
            self.end_snapshot()

    def _record_arrivals(self, source: catalog.Source, arrivals: np.ndarray) -> int:
        """customer_keys.record_arrivals on the run connection, importing the snapshot."""
        assert source.id_type is not None
        exported = self.export_snapshot()
        self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with self._transaction():
                self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
                return customer_keys.record_arrivals(
                    self._conn,
                    self.segmentation,
                    sql.SQL("SELECT * FROM {}").format(source.table.identifier()),
                    source.id_column,
                    source.id_type,
                    arrivals.tolist(),
                )
        finally:
            self._conn.isolation_level = None

    def begin_recording_ids(self, source: catalog.Source) -> None:
        """For ids keyed by hash, when this run will not know its arrivals (it compares itself
        with no earlier run in memory): record every new id now, in a session of its own that
        imports the snapshot, while the scoring pass runs; record_customer_ids waits for it. The
        server writes the ids on one core while the pass works on the other."""
        if source.id_type is None or self._recording is not None:
            return
        exported = self.export_snapshot()
        self._recording = _Recording(self._url, exported, self.segmentation, source, self.server)

    def count_rows(self, source: catalog.Source) -> int:
        return queries.count_rows(self._source(), source)

    def read_valid(self, source: catalog.Source, *, n_rows: int | None = None) -> Iterator[Chunk]:
        """The valid rows, chunk by chunk. Given the table's row count, a table of more than
        two chunks is read over two sessions sharing the snapshot (segmentation.source.split_read)."""
        chunk_rows = self.settings.chunk_rows
        if n_rows is None:
            return stream_valid(self._source(), source, chunk_rows)
        return split_read.stream_valid_split(
            self._source(),
            source,
            chunk_rows,
            connect=self._second_session,
            min_rows=2 * chunk_rows,
            n_rows=n_rows,
        )

    def id_bounds(self, source: catalog.Source) -> tuple[int, int] | None:
        """The smallest and largest id in the snapshot; read once (a scan where the id has no
        index), since the snapshot's answer cannot change."""
        table = str(source.table), source.id_column
        if table not in self._id_bounds:
            self._id_bounds[table] = queries.id_bounds(self._source(), source)
        return self._id_bounds[table]

    def export_snapshot(self) -> str:
        """The snapshot's id, for other sessions to read the source in it (segmentation.store.
        range_pass) while this run holds it."""
        return str(db.scalar(self._source(), "SELECT pg_export_snapshot()"))

    def _second_session(self) -> psycopg.Connection:
        return db.connect_snapshot(self._url, application_name="segmentation-snapshot", server=self.server)

    def quarantine(self, source: catalog.Source) -> int:
        """Copy the snapshot's invalid rows, with their reasons, into segmentation.quarantine."""
        with self._transaction():
            return runs.copy_quarantine(self._source(), self._conn, queries.quarantine_copy_query(source, self.run_id))

    def end_snapshot(self) -> None:
        """The source is no longer needed: end the snapshot rather than hold its lock on the
        source table (and vacuum's horizon) any longer; unless the run's ids are still to be
        recorded in it (record_customer_ids ends it then). Its connection may be what broke; the
        error that broke it is the one reported."""
        if self._ids_pending:
            return
        self._snapshot_ended = True
        with suppress(psycopg.Error):
            self._snapshot.rollback()

    # What the run compares itself with.

    def previous(self) -> history.PreviousRun | None:
        with self._transaction():
            return history.previous_run(self._conn, self.segmentation)

    def distributions(self, run_id: int) -> dict[str, Distribution]:
        """Another run's feature distributions, to measure this run's input drift against."""
        with self._transaction():
            return history.distributions(self._conn, run_id)

    def next_segment_id(self) -> int:
        return history.next_segment_id(self._conn)

    def drift(self, previous: history.PreviousRun, changes: Changes | None) -> history.Drift | None:
        """Compare with the previous run customer by customer: from `changes`, the comparison
        made in memory while the assignments were written against that run, when there is one
        (None: there is not, or it gave up), else in SQL. Either way the changes are kept in
        the run connection's session, for `complete`: against the newest history run, they are
        what the run adds to the history."""
        with self._transaction():
            drift = None if changes is None else history.drift_from_changes(self._conn, previous, changes)
            return drift if drift is not None else history.measure_drift(self._conn, self.run_id, previous)

    # Writing the run.

    @contextmanager
    def assignments(self, compare_with: history.PreviousRun | None = None) -> Iterator[partitions.AssignmentWriter]:
        """One transaction: the run's table is created, loaded and keyed; if the block fails,
        nothing of it remains. compare_with: a previous run whose rows are read first, so each
        row written is compared with its own there (the writer's `changes()` once the block
        has ended: the drift, without a second pass)."""
        comparison = None
        if compare_with is not None:
            with self._transaction():
                comparison = history.start_comparison(self._conn, compare_with)
        with self._transaction(), partitions.AssignmentWriter(self._conn, self.run_id, comparison=comparison) as writer:
            yield writer

    @contextmanager
    def assignments_by_range(self, bounds: IdRange, compare_with: history.PreviousRun | None) -> Iterator[RangePass]:
        """The scoring pass split into ranges of ids within bounds, written by other sessions
        (segmentation.store.range_pass): the run's table is created and committed, empty, and
        the snapshot exported for them; once they are done, the table is keyed. compare_with: a
        previous run on the same table, which each range compares its rows with, when its rows
        are still there and the ids dense enough (RangePass.compare_with is None otherwise); the
        ranges' changes then go to `join_changes`. If the pass fails, the table stays unattached,
        and `fail` drops it."""
        with self._transaction():
            partitions.create_table(self._conn, self.run_id)
            if compare_with is not None and not history.compares_by_range(self._conn, compare_with, bounds):
                compare_with = None
        yield RangePass(self.export_snapshot(), self.server, compare_with, bounds)
        with self._transaction():
            partitions.add_key(self._conn, self.run_id)

    def join_changes(self, ranges: RangePass, changes: list[Changes | None]) -> Changes | None:
        """The changes of the ranges of a pass as one, with the previous run's customers outside
        the ranges (none of them is in this run); None when the ranges did not compare or one
        gave up."""
        if ranges.compare_with is None:
            return None
        with self._transaction():
            outside = history.changes_outside(self._conn, ranges.compare_with, ranges.bounds)
        return join([*changes, *outside], history.max_changes(ranges.compare_with))

    def complete(
        self,
        found: runs.Publication,
        *,
        status: str,
        forced: bool = False,
        error: str | None = None,
        compared_with: int | None = None,
    ) -> None:
        """Keep the run: attach its table (committed on its own, see partitions.attach), then
        write its summaries and end it as `status` in one transaction. A published run becomes
        the current run, keeps its changes against the run current before it (segmentation.store.
        changes: who moved) and enters the history (segmentation.store.spells) in that same
        transaction; a staged or rejected run is kept, complete, to be made current later
        (segmentation.rollback.make_current). compared_with: the run `drift` measured against,
        whose changes the session keeps."""
        with self._transaction():
            partitions.attach(self._conn, self.run_id)
        with self._transaction():
            runs.mark_complete(self._conn, self.run_id, found, status=status, forced=forced, error=error)
            if status == "published":
                switch = runs.record_switch(self._conn, self.run_id, action="publish")
                # Its changes against the run current before (the ones drift counted, when it
                # was measured against that run), then the history's, from the same comparison.
                compared_with = change_feed.record(self._conn, switch, compared_with=compared_with)
                spells.enter(self._conn, self.run_id, compared_with=compared_with)

    def fail(self, error: str) -> str | None:
        """Mark the run failed and drop its rows, unless it is already kept (a run that
        published stays published). The run connection itself may be what failed: then on a
        fresh one. Returns the run's status as the database has it now, or None when it could
        not be reached (the next run marks a run left running abandoned)."""
        for attempt in (self._record_failure_on_run_connection, self._record_failure_on_new_connection):
            try:
                return attempt(error)
            except (psycopg.Error, SegmentationError):
                continue
        return None

    def _record_failure_on_run_connection(self, error: str) -> str:
        return _record_failure(self._conn, self.run_id, error, self.settings.quarantine_keep_days)

    def _record_failure_on_new_connection(self, error: str) -> str:
        with db.connect(self._url, application_name="segmentation-run") as conn:
            return _record_failure(conn, self.run_id, error, self.settings.quarantine_keep_days)

    def prune(self, keep: int) -> list[int]:
        """Retention (segmentation.store.retention), statement by statement."""
        return retention.prune(self._conn, keep, self.settings.quarantine_keep_days, self.segmentation)

    def close(self) -> None:
        """Release the run lock, then close both connections. Released first, in a statement that
        returns once it is done: a closed connection's backend lets go of its locks only as it
        exits, a moment after, and a rollback or the next run right after would find it held."""
        if self._recording is not None:
            self._recording.stop()
        with suppress(psycopg.Error):
            if self._conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._conn.execute("SELECT pg_advisory_unlock_all()")
        for conn in (self._snapshot, self._conn):
            with suppress(psycopg.Error):
                conn.close()


def _record_failure(conn: psycopg.Connection, run_id: int, error: str, quarantine_days: int) -> str:
    with conn.transaction():
        if runs.mark_failed(conn, run_id, error):
            partitions.drop_unattached(conn, run_id)
        found = runs.outcome_of(conn, run_id=run_id)
        if found is None:  # fail() then tries the next way, or says the status is unknown
            raise SegmentationError(f"run {run_id} has no row in segmentation.runs")
    # Retention of quarantined rows applies on failing nights too; the failure is recorded whatever happens to it.
    with suppress(psycopg.Error), conn.transaction():
        retention.forget_quarantine(conn, quarantine_days)
    return found.status


class _Recording:
    """Run.begin_recording_ids' session: customer_keys.record_ids in a thread, on a connection of
    its own, in one REPEATABLE READ transaction that imports the run's snapshot; it commits
    there. result() waits and returns how many ids were new, or raises what it raised."""

    def __init__(self, url: str, snapshot: str, segmentation: str, source: catalog.Source, server: str):
        self._conn = db.connect(url, application_name="segmentation-ids", server=server)
        self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._snapshot, self._segmentation, self._source = snapshot, segmentation, source
        self._added = 0
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._record, name="segmentation-ids", daemon=True)
        self._thread.start()

    def _record(self) -> None:
        source = self._source
        try:
            assert source.id_type is not None
            with self._conn.transaction():
                self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self._snapshot)))
                self._added = customer_keys.record_ids(
                    self._conn,
                    self._segmentation,
                    sql.SQL("SELECT * FROM {}").format(source.table.identifier()),
                    source.id_column,
                    source.id_type,
                    unique=source.id_unique,
                )
        except Exception as exc:  # noqa: BLE001 (handed to the flow's thread by result(), raised there)
            self._error = exc

    def result(self) -> int:
        self._thread.join()
        with suppress(psycopg.Error):
            self._conn.close()
        if self._error is not None:
            raise self._error
        return self._added

    def stop(self) -> None:
        """The run ends without waiting for it: cancel its statement, then close."""
        if self._thread.is_alive():
            with suppress(psycopg.Error):
                self._conn.cancel_safe()
            self._thread.join()
        with suppress(psycopg.Error):
            self._conn.close()
