"""Who moved: segmentation_bi.current_segment_changes and current_segment_transitions after a
publish (changes compared in memory and in SQL), a rollback and a promotion, checked row by row
against a full join of the two runs' current_customer_segments, taken before and after the switch;
the matrix adds up to both runs' segment sizes; the feed agrees with the run's drift figures; a
named segmentation has its own views; retention and erasure delete the rows.

The runs go through the store's own Run (the flow's path, without the training), so that which
customers move, leave and arrive is known exactly; one test runs the flow itself on changed data."""

from __future__ import annotations

import threading
from dataclasses import asdict

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql

from segmentation import migrations
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.purge import purge
from segmentation.rollback import make_current
from segmentation.segmentations import view_name
from segmentation.settings import Settings
from segmentation.store.run import Run
from support.docs import documented_sql
from support.processes import wait_for
from support.publications import publication

pytestmark = pytest.mark.usefixtures("database_url")


def write_run(
    rows: dict[int, int],
    *,
    status: str = "published",
    in_memory: bool = True,
    segmentation: str = "default",
    keep: int = 30,
) -> int:
    """One run through the store: its rows, drift against the current run (compared in memory as
    the rows are written, or in SQL afterwards), kept as `status`, then retention."""
    rng = np.random.default_rng(len(rows))
    run, _ = Run.start(
        Settings.from_env(),
        flow_run_id=None,
        source_table="public.customers",
        features=["age"],
        params={},
        segmentation=segmentation,
    )
    try:
        ids = rng.permutation(np.array(sorted(rows), dtype=np.int64))
        previous = run.previous()
        with run.assignments(previous if in_memory else None) as writer:
            for part in np.array_split(ids, 3):
                writer.write(part, np.array([rows[c] for c in part], dtype=np.int32), rng.random(len(part)))
        drift = run.drift(previous, writer.changes()) if previous is not None else None
        run.complete(
            publication(rows, asdict(drift) if drift else None),
            status=status,
            compared_with=drift.previous_run_id if drift else None,
        )
        run.prune(keep)
        return run.run_id
    finally:
        run.close()


def night(rows: dict[int, int], *, move: list[int], leave: list[int], arrive: list[int]) -> dict[int, int]:
    """The next night's rows: `move` to the next segment (1..5, round), `leave` gone, `arrive` new."""
    after = {c: s for c, s in rows.items() if c not in set(leave)}
    for c in move:
        after[c] = rows[c] % 5 + 1
    for c in arrive:
        after[c] = c % 5 + 1
    return after


def view(segmentation: str, default_view: str) -> sql.Identifier:
    return sql.Identifier("segmentation_bi", view_name(segmentation, default_view))


def snapshot(conn, segmentation: str = "default") -> pd.DataFrame:
    """What current_customer_segments shows now."""
    return pd.DataFrame(
        conn.execute(
            sql.SQL("SELECT customer_id, segment_id FROM {}").format(view(segmentation, "current_customer_segments"))
        ).fetchall(),
        columns=["customer_id", "segment_id"],
    )


def straightforward(before: pd.DataFrame, after: pd.DataFrame) -> tuple[set[tuple], set[tuple]]:
    """The changes and the transition matrix, from a full join of the two snapshots."""
    joined = before.merge(after, on="customer_id", how="outer", suffixes=("_from", "_to"))
    cells: dict[tuple, int] = {}
    changes = set()
    for customer, was, now in joined[["customer_id", "segment_id_from", "segment_id_to"]].itertuples(index=False):
        old = None if pd.isna(was) else int(was)
        new = None if pd.isna(now) else int(now)
        cells[(old, new)] = cells.get((old, new), 0) + 1
        if old != new:
            change = "entered" if old is None else "left" if new is None else "moved"
            changes.add((int(customer), old, new, change))
    return changes, {(o, n, c) for (o, n), c in cells.items()}


def feed(conn, segmentation: str = "default") -> tuple[set[tuple], set[tuple], set[tuple]]:
    """The change feed, the transitions, and the (run_id, from_run_id) they say they are between."""
    changes = conn.execute(
        sql.SQL("SELECT run_id, from_run_id, customer_id, from_segment_id, to_segment_id, change FROM {}").format(
            view(segmentation, "current_segment_changes")
        )
    ).fetchall()
    transitions = conn.execute(
        sql.SQL(
            "SELECT run_id, from_run_id, from_segment_id, from_segment_name, to_segment_id, to_segment_name, "
            "n_customers FROM {}"
        ).format(view(segmentation, "current_segment_transitions"))
    ).fetchall()
    for run_id, from_run_id, old, old_name, new, new_name, _ in transitions:
        assert old_name == (None if old is None else names(conn, from_run_id)[old])
        assert new_name == (None if new is None else names(conn, run_id)[new])
    return (
        {row[2:] for row in changes},
        {(old, new, n) for _, _, old, _, new, _, n in transitions},
        {row[:2] for row in changes} | {row[:2] for row in transitions},
    )


def names(conn, run_id: int) -> dict[int, str]:
    return dict(
        conn.execute(
            "SELECT segment_id, segment_name FROM segmentation.segments WHERE run_id = %s", (run_id,)
        ).fetchall()
    )


def sizes(conn, run_id: int) -> dict[int, int]:
    return dict(
        conn.execute(
            "SELECT segment_id, n_customers FROM segmentation.segments WHERE run_id = %s AND n_customers > 0", (run_id,)
        ).fetchall()
    )


def assert_adds_up(conn, transitions: set[tuple], run_id: int, from_run_id: int | None) -> None:
    """The matrix's rows add up to the previous run's segment sizes, its columns to the current's."""
    by_to: dict[int, int] = {}
    by_from: dict[int, int] = {}
    for old, new, n in transitions:
        assert n > 0
        if new is not None:
            by_to[new] = by_to.get(new, 0) + n
        if old is not None:
            by_from[old] = by_from.get(old, 0) + n
    assert by_to == sizes(conn, run_id)
    assert by_from == (sizes(conn, from_run_id) if from_run_id is not None else {})


def assert_feed(conn, before: pd.DataFrame, run_id: int, from_run_id: int | None, segmentation: str = "default"):
    """The feed after a switch from `from_run_id` (whose snapshot is `before`) to `run_id`."""
    after = snapshot(conn, segmentation)
    expected_changes, expected_transitions = straightforward(before, after)
    changes, transitions, between = feed(conn, segmentation)
    assert between == {(run_id, from_run_id)}
    assert changes == expected_changes
    assert transitions == expected_transitions
    assert_adds_up(conn, transitions, run_id, from_run_id)
    return changes


def drift_figures(conn, run_id: int) -> tuple:
    return conn.execute(
        "SELECT previous_run_id, customers_changed, customers_added, customers_removed FROM segmentation.runs "
        "WHERE run_id = %s",
        (run_id,),
    ).fetchone()


def counted(changes: set[tuple]) -> tuple[int, int, int]:
    return tuple(sum(row[3] == kind for row in changes) for kind in ("moved", "entered", "left"))


def test_the_feed_follows_publishes_a_rollback_and_a_promotion(conn):
    rng = np.random.default_rng(22)
    rows = {c: int(rng.integers(1, 6)) for c in range(1, 2001)}

    # The first publish: every customer entered.
    first = write_run(rows)
    changes, transitions, between = feed(conn)
    assert between == {(first, None)}
    assert changes == {(c, None, s, "entered") for c, s in rows.items()}
    assert transitions == {(None, s, n) for s, n in sizes(conn, first).items()}
    assert_adds_up(conn, transitions, first, None)

    # A night where 60 customers move, 20 leave and 30 arrive, compared in memory.
    moved, left, arrived = list(range(1, 61)), list(range(1001, 1021)), list(range(5001, 5031))
    before = snapshot(conn)
    rows = night(rows, move=moved, leave=left, arrive=arrived)
    second = write_run(rows, in_memory=True)
    changes = assert_feed(conn, before, second, first)
    assert {c for c, *_ in changes} == set(moved) | set(left) | set(arrived)
    assert {(c, change) for c, _, _, change in changes} == (
        {(c, "moved") for c in moved} | {(c, "left") for c in left} | {(c, "entered") for c in arrived}
    )
    # What the run's drift counted: changed are those in both runs, new and gone apart.
    assert drift_figures(conn, second) == (first, *counted(changes)) == (first, 60, 30, 20)
    # The documented queries: the CRM sync, the run to remember, where segment 3's customers went.
    sync, current_run, segment_3 = (
        conn.execute(query).fetchall() for query in documented_sql("bi.md", "Who moved").split(";\n") if query.strip()
    )
    assert [(c, change, new, old) for c, change, new, _, old in sync] == sorted(
        (c, change, new, old) for c, old, new, change in changes
    )
    assert all(name == f"segment {new}" for _, _, new, name, _ in sync if new is not None)
    assert current_run == [(second,)]
    assert {(new, n) for new, _, n in segment_3} == {(new, n) for old, new, n in feed(conn)[1] if old == 3}

    # The next night, compared in SQL, with customers who left coming back.
    before = snapshot(conn)
    rows = night(rows, move=list(range(100, 180)), leave=list(range(1500, 1510)), arrive=left[:5])
    third = write_run(rows, in_memory=False)
    changes = assert_feed(conn, before, third, second)
    assert drift_figures(conn, third) == (second, *counted(changes)) == (third - 1, 80, 5, 10)

    # A run that changes nothing: the feed is empty, the matrix all stayed.
    before = snapshot(conn)
    fourth = write_run(rows)
    assert assert_feed(conn, before, fourth, third) == set()
    assert drift_figures(conn, fourth) == (third, 0, 0, 0)

    # A rollback to the second run: the feed is between the run current before (the fourth)
    # and the second, compared in SQL.
    before = snapshot(conn)
    make_current(conn, run_id=second, reason="test")
    changes = assert_feed(conn, before, second, fourth)
    assert counted(changes) == (80, 10, 5)  # the third night undone: who arrived then left

    # A staged run, promoted: the feed is between the run current then (the second) and it.
    staged_rows = night(rows, move=list(range(300, 340)), leave=[2000], arrive=[6001, 6002])
    staged = write_run(staged_rows, status="staged")
    assert feed(conn)[2] == {(second, fourth)}  # a staged run switches nothing
    before = snapshot(conn)
    make_current(conn, run_id=staged, reason="test")
    assert_feed(conn, before, staged, second)

    # A rollback without a run named goes back to the run current before: the promotion undone.
    before = snapshot(conn)
    make_current(conn, run_id=None, reason="test")
    changes = assert_feed(conn, before, second, staged)
    # The second run had customers 1500-1509 and 2000, not yet 1001-1005 (back with the third)
    # nor 6001 and 6002 (new with the staged run).
    assert {(c, change) for c, _, _, change in changes if change != "moved"} == (
        {(c, "entered") for c in [*range(1500, 1510), 2000]} | {(c, "left") for c in [*range(1001, 1006), 6001, 6002]}
    )


def test_a_named_segmentation_has_its_own_feed(conn):
    rows = {c: c % 5 + 1 for c in range(1, 501)}
    write_run(rows)
    write_run(night(rows, move=[1, 2, 3], leave=[], arrive=[]))
    rfm_rows = {c: c % 3 + 1 for c in range(1, 301)}
    rfm_first = write_run(rfm_rows, segmentation="rfm")
    before = snapshot(conn, "rfm")
    rfm_second = write_run(night(rfm_rows, move=[10, 11], leave=[12], arrive=[900]), segmentation="rfm")
    changes = assert_feed(conn, before, rfm_second, rfm_first, "rfm")
    assert {(c, change) for c, _, _, change in changes} == {
        (10, "moved"),
        (11, "moved"),
        (12, "left"),
        (900, "entered"),
    }
    # The default's feed is its own, untouched by the rfm runs.
    assert {(c, change) for c, _, _, change in feed(conn)[0]} == {(1, "moved"), (2, "moved"), (3, "moved")}
    for default_view in ("current_segment_transitions", "current_segment_changes"):
        assert view_name("rfm", default_view) in {
            r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'segmentation_bi'")
        }
        described = conn.execute(
            "SELECT obj_description(%s::regclass, 'pg_class') IS NOT NULL AND bool_and(col_description(attrelid, attnum) "
            "IS NOT NULL) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 GROUP BY attrelid",
            (f"segmentation_bi.{view_name('rfm', default_view)}",) * 2,
        ).fetchone()
        assert described == (True,)


def test_retention_and_erasure_delete_the_rows(conn):
    rows = {c: c % 5 + 1 for c in range(1, 1001)}
    runs = [write_run(rows)]
    for n in range(5):
        rows = night(rows, move=list(range(10 * n + 1, 10 * n + 11)), leave=[900 + n], arrive=[2000 + n])
        runs.append(write_run(rows, keep=30 if n < 4 else 2))
        if n == 3:
            # While every run is kept, so is every switch's feed: 10 moved, 1 left, 1 arrived each.
            feeds = conn.execute("SELECT run_id, from_run_id FROM segmentation.change_feeds ORDER BY switch_id")
            assert feeds.fetchall() == [(runs[0], None), *zip(runs[1:], runs[:-1], strict=True)]
            assert conn.execute("SELECT count(*) FROM segmentation.customer_changes").fetchone() == (4 * 12,)
    pruned = {
        r for (r,) in conn.execute("SELECT run_id FROM segmentation.runs WHERE assignments_pruned_at IS NOT NULL")
    }
    assert pruned == set(runs[:-2])
    # Only the switch between runs still kept has its changes.
    feeds = conn.execute("SELECT run_id, from_run_id FROM segmentation.change_feeds ORDER BY switch_id").fetchall()
    assert feeds == [(runs[-1], runs[-2])]
    assert conn.execute("SELECT count(*) FROM segmentation.customer_changes").fetchone() == (12,)

    # An erasure: a customer who moved with the current switch, one who arrived, one who stayed.
    mover, newcomer, stayer = 41, 2004, 500
    before = snapshot(conn)
    assert set(before.customer_id) >= {mover, newcomer, stayer}
    assert {c for c, *_ in feed(conn)[0]} >= {mover, newcomer}
    done = purge(conn, [mover, newcomer, stayer])
    assert done.change_rows == 2
    assert conn.execute(
        "SELECT count(*) FROM segmentation.customer_changes WHERE customer_id = ANY(%s)", ([mover, newcomer, stayer],)
    ).fetchone() == (0,)
    assert conn.execute("SELECT change_rows FROM segmentation.purges").fetchone() == (2,)
    changes, transitions, _ = feed(conn)
    assert {c for c, *_ in changes} & {mover, newcomer, stayer} == set()
    # The matrix still adds up to both runs' segment sizes, which lost the erased customers.
    assert_adds_up(conn, transitions, runs[-1], runs[-2])
    # And the feed is still the full join of the two runs, as the history now has them.
    previous = pd.DataFrame(
        conn.execute(
            "SELECT customer_id, segment_id FROM segmentation_bi.customer_segment_history WHERE run_id = %s",
            (runs[-2],),
        ).fetchall(),
        columns=["customer_id", "segment_id"],
    )
    assert len(previous) == len(before) - 2  # the mover and the stayer erased; the newcomer was not in it
    expected_changes, expected_transitions = straightforward(previous, snapshot(conn))
    assert (changes, transitions) == (expected_changes, expected_transitions)


def test_the_feed_reads_no_run_rows_except_after_a_first_switch(conn):
    """The change feed reads the switch's kept rows: no row of either run's assignments (a full
    join of two 10-million-customer runs would not be read in well under a second). Only a first
    switch reads the run's own rows: every customer entered."""
    rows = {c: c % 5 + 1 for c in range(1, 3001)}
    write_run(rows)
    first_plan = plan(conn, "current_segment_changes")
    assert scans_of_runs(first_plan) and all("never executed" not in line for line in scans_of_runs(first_plan))
    write_run(night(rows, move=[1, 2], leave=[3], arrive=[9000]))
    changes_plan = plan(conn, "current_segment_changes")
    assert scans_of_runs(changes_plan) and all("never executed" in line for line in scans_of_runs(changes_plan))
    assert "customer_segments" not in plan(conn, "current_segment_transitions")


def plan(conn, default_view: str) -> str:
    return "\n".join(
        r[0]
        for r in conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM {}").format(
                view("default", default_view)
            )
        )
    )


def scans_of_runs(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Scan" in line and "customer_segments_run_" in line]


def test_bi_readers_never_see_one_runs_changes_with_anothers_segments(conn, database_url):
    """A BI session reads the feed, the matrix and the current run in one statement while runs
    publish and a rollback switches back: every read is of one switch, whole."""
    rows = {c: c % 5 + 1 for c in range(1, 20_001)}
    write_run(rows)
    observations: list[tuple] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def read_in_a_loop() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not stop.is_set():
                try:
                    observations.append(
                        reader.execute(
                            """SELECT (SELECT run_id FROM segmentation_bi.current_run),
                                      (SELECT n_customers FROM segmentation_bi.current_run),
                                      (SELECT array_agg(DISTINCT (run_id, from_run_id)::text)
                                       FROM segmentation_bi.current_segment_changes),
                                      (SELECT count(*) FROM segmentation_bi.current_segment_changes),
                                      (SELECT array_agg(DISTINCT run_id) FROM segmentation_bi.current_segment_transitions),
                                      (SELECT sum(n_customers) FILTER (WHERE to_segment_id IS NOT NULL)
                                       FROM segmentation_bi.current_segment_transitions),
                                      (SELECT sum(n_customers) FILTER (WHERE from_segment_id <> to_segment_id
                                                                          OR from_segment_id IS NULL
                                                                          OR to_segment_id IS NULL)
                                       FROM segmentation_bi.current_segment_transitions),
                                      (SELECT from_run_id FROM segmentation.current_run_log
                                       ORDER BY switch_id DESC LIMIT 1)"""
                        ).fetchone()
                    )
                except psycopg.Error as exc:
                    errors.append(exc)

    thread = threading.Thread(target=read_in_a_loop)
    thread.start()
    try:
        published = []
        for n in range(4):
            seen = len(observations)
            rows = night(rows, move=list(range(1000 * n + 1, 1000 * n + 1 + 200 * (n + 1))), leave=[], arrive=[])
            published.append(write_run(rows))
            wait_for(lambda seen=seen: len(observations) > seen + 1, what="the reader to read the views again")
        seen = len(observations)
        make_current(conn, run_id=published[0], reason="test")
        wait_for(lambda: len(observations) > seen + 1, what="the reader to read the views again")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    runs_seen = set()
    for run_id, n_customers, between, n_changes, transition_runs, column_total, changed, from_run_id in observations:
        runs_seen.add(run_id)
        expected_between = [f"({run_id},{from_run_id if from_run_id is not None else ''})"]
        assert between == expected_between
        assert transition_runs == [run_id]
        assert column_total == n_customers
        assert changed == n_changes
    assert runs_seen >= {published[-1], published[0]}


@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_publishes_who_moved_when_customers_change(conn):
    """The nightly flow itself, on data that changed: customers whose spending flipped, some gone,
    some new. The feed is the full join of the two runs, agrees with the run's drift, and names
    every customer who left and arrived."""
    generate_customers(conn, 3000, seed=23)
    first = flow_run()
    before = snapshot(conn)
    conn.execute("UPDATE customers SET spending_score = 101 - spending_score WHERE customer_id % 9 = 0")
    conn.execute("DELETE FROM customers WHERE customer_id % 25 = 0")
    conn.execute(
        """INSERT INTO customers (customer_id, gender, age, annual_income, spending_score)
           SELECT customer_id + 100000, gender, age, annual_income, spending_score FROM customers
           WHERE customer_id <= 40"""
    )
    second = flow_run()
    changes = assert_feed(conn, before, second, first)
    assert drift_figures(conn, second) == (first, *counted(changes))
    by_kind = {kind: {c for c, _, _, change in changes if change == kind} for kind in ("moved", "entered", "left")}
    assert by_kind["left"] == set(range(25, 3001, 25))
    assert by_kind["entered"] == {c + 100000 for c in range(1, 41) if c != 25}  # 25 was gone already
    # Spending flipped moves customers; the others mostly stay where they were.
    flipped = {c for c in range(9, 3001, 9) if c % 25}
    assert len(by_kind["moved"] & flipped) > len(flipped) // 3
    assert len(by_kind["moved"] - flipped) < len(by_kind["moved"] & flipped)


def flow_run() -> int:
    state = customer_segmentation(n_clusters=4, n_init=1, max_customer_drop=0.95, return_state=True)
    assert state.is_completed(), state.message
    return state.result()["run_id"]


def test_the_migration_fills_in_the_current_switch_of_a_database_upgraded(conn):
    """Migration 019 on a database with runs: the current switch of each segmentation gets its
    changes from the two runs' rows, as a switch made today would have kept them."""
    rows = {c: c % 5 + 1 for c in range(1, 801)}
    write_run(rows)
    write_run(night(rows, move=[1, 2, 3], leave=[4], arrive=[5000]))
    # The previous run's own table is gone (the history answers for it): from the spells.
    assert conn.execute("SELECT to_regclass('segmentation.customer_segments_run_1')").fetchone() == (None,)
    # A first switch: every customer entered.
    rfm_rows = {c: c % 3 + 1 for c in range(1, 301)}
    write_run(rfm_rows, segmentation="rfm")
    # A rollback: both runs' tables are here, from them.
    back_rows = {c: c % 4 + 1 for c in range(1, 201)}
    back_first = write_run(back_rows, segmentation="back")
    write_run(night(back_rows, move=[7, 8], leave=[9], arrive=[]), segmentation="back")
    make_current(conn, run_id=back_first, reason="test")
    names = ("default", "rfm", "back")
    kept = {name: feed(conn, name) for name in names}
    conn.execute("DELETE FROM segmentation.customer_changes")
    conn.execute("DELETE FROM segmentation.change_feeds")
    assert feed(conn) == (set(), set(), set())  # not known: nothing, rather than "nobody moved"
    text = (migrations.SQL_DIR / "019_segment_changes.sql").read_text()
    conn.execute(text[text.index("DO $feeds$") : text.index("$feeds$;") + len("$feeds$;")])
    assert {name: feed(conn, name) for name in names} == kept
    assert {c for c, *_ in kept["back"][0]} == {7, 8, 9}
    assert conn.execute("SELECT count(*) FROM segmentation.customer_changes").fetchone() == (5 + 3,)
