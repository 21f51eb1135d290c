"""History as segment spells. Many runs with random churn (customers moving, leaving, coming
back, arriving), staged and rejected runs, a rollback to a run whose own rows were dropped, a
staged run promoted after newer runs, and retention: after every run the history answers
"which segment was customer X in after run R" exactly as the full per-run rows would, and
each run's drift is what a straightforward comparison of the full rows gives.

The runs go through the store's own Run (the flow's path, without the training): its
assignments, drift, complete and prune."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from segmentation.rollback import make_current
from segmentation.settings import Settings
from segmentation.store import history as store_history
from segmentation.store.run import Run
from support.publications import publication

KEEP = 8


def write_run(rows: dict[int, int], status: str, rng: np.random.Generator, in_memory: bool) -> int:
    """One run through the store: its rows, drift against the current run (compared in memory
    as the rows are written, or in SQL afterwards), kept as `status`, then retention."""
    run, _ = Run.start(
        Settings.from_env(), flow_run_id=None, source_table="public.customers", features=["age"], params={}
    )
    try:
        ids = rng.permutation(np.array(sorted(rows), dtype=np.int64))  # in no particular order
        previous = run.previous()
        with run.assignments(previous if in_memory else None) as writer:
            for part in np.array_split(ids, 3):
                writer.write(part, np.array([rows[c] for c in part], dtype=np.int32), rng.random(len(part)))
        drift = run.drift(previous, writer.changes()) if previous is not None else None
        compared_with = drift.previous_run_id if drift else None
        run.complete(publication(rows, asdict(drift) if drift else None), status=status, compared_with=compared_with)
        run.prune(KEEP)
        return run.run_id
    finally:
        run.close()


def churn(rows: dict[int, int], gone: dict[int, int], next_id: int, rng: np.random.Generator) -> tuple[dict, int]:
    """A night's changes: 3% move, 1% leave, some who left come back, 1% arrive."""
    rows = dict(rows)
    customers = np.array(sorted(rows))
    for c in rng.choice(customers, size=len(customers) * 3 // 100, replace=False):
        rows[int(c)] = int(rng.choice([s for s in range(1, 7) if s != rows[int(c)]]))
    for c in rng.choice(customers, size=len(customers) // 100, replace=False):
        gone[int(c)] = rows.pop(int(c))
    for c in list(gone)[: len(gone) // 3]:
        rows[c] = int(rng.integers(1, 7))
        del gone[c]
    for _ in range(len(customers) // 100):
        rows[next_id] = int(rng.integers(1, 7))
        next_id += 1
    return rows, next_id


def history(conn) -> set[tuple[int, int, int]]:
    return set(conn.execute("SELECT customer_id, run_id, segment_id FROM segmentation_bi.customer_segment_history"))


def history_from_spells(conn) -> set[tuple[int, int, int]]:
    """customer_segment_spells expanded over the kept history runs."""
    versions = dict(
        conn.execute(
            "SELECT run_id, history_version FROM segmentation.runs "
            "WHERE history_version IS NOT NULL AND assignments_pruned_at IS NULL"
        )
    )
    newest = max(versions.values())
    found = set()
    for customer, segment, began, ended in conn.execute(
        "SELECT customer_id, segment_id, valid_from_run_id, valid_to_run_id FROM segmentation_bi.customer_segment_spells"
    ):
        low = conn.execute("SELECT history_version FROM segmentation.runs WHERE run_id = %s", (began,)).fetchone()[0]
        high = (
            newest + 1
            if ended is None
            else conn.execute("SELECT history_version FROM segmentation.runs WHERE run_id = %s", (ended,)).fetchone()[0]
        )
        found |= {(customer, run_id, segment) for run_id, v in versions.items() if low <= v < high}
    return found


def expected(truth: dict[int, dict[int, int]], conn) -> set[tuple[int, int, int]]:
    kept = [
        r[0]
        for r in conn.execute(
            "SELECT run_id FROM segmentation.runs WHERE status = 'published' AND assignments_pruned_at IS NULL"
        )
    ]
    return {(c, r, s) for r in kept for c, s in truth[r].items()}


def drift_of(conn, run_id: int) -> tuple:
    return conn.execute(
        "SELECT previous_run_id, customers_compared, customers_changed, customers_added, customers_removed "
        "FROM segmentation.runs WHERE run_id = %s",
        (run_id,),
    ).fetchone()


def straightforward_drift(old_id: int, old: dict[int, int], new: dict[int, int]) -> tuple:
    both = old.keys() & new.keys()
    return (
        old_id,
        len(both),
        sum(old[c] != new[c] for c in both),
        len(new.keys() - old.keys()),
        len(old.keys() - new.keys()),
    )


def current(conn) -> tuple[int, dict[int, int], int]:
    rows = conn.execute(
        "SELECT run_id, customer_id, segment_id, distance FROM segmentation_bi.current_customer_segments"
    )
    found = list(rows)
    return found[0][0], {c: s for _, c, s, _ in found}, sum(d is None for *_, d in found)


@pytest.mark.usefixtures("database_url")
def test_the_history_answers_for_every_run_as_full_rows_would(conn, monkeypatch):
    in_sql: list[int] = []
    measure_in_sql = store_history.measure_drift
    monkeypatch.setattr(store_history, "measure_drift", lambda c, r, p: in_sql.append(r) or measure_in_sql(c, r, p))
    rng = np.random.default_rng(61)
    rows = {c: int(rng.integers(1, 7)) for c in range(1, 3001)}
    gone: dict[int, int] = {}
    next_id = 3001
    truth: dict[int, dict[int, int]] = {}
    current_id = None
    staged = []
    for night in range(24):
        status = "staged" if night in (5, 11) else "rejected" if night == 8 else "published"
        run_id = write_run(rows, status, rng, in_memory=night % 2 == 0)
        truth[run_id] = rows
        if current_id is not None:
            assert drift_of(conn, run_id) == straightforward_drift(current_id, truth[current_id], rows)
            assert (run_id in in_sql) == (night % 2 == 1), f"night {night}: compared in the wrong place"
        if status == "published":
            current_id = run_id
        else:
            staged.append(run_id)
        assert history(conn) == expected(truth, conn), f"after run {run_id}"
        if night == 14:
            # A rollback to a run whose own rows retention dropped: rebuilt from the spells.
            back = sorted(r for r in truth if r not in staged)[-4]
            assert conn.execute(
                "SELECT to_regclass(%s)", (f"segmentation.customer_segments_run_{back}",)
            ).fetchone() == (None,)
            make_current(conn, run_id=back, reason="test")
            run_id_now, rows_now, without_distance = current(conn)
            assert (run_id_now, rows_now, without_distance) == (back, truth[back], len(truth[back]))
            current_id = back
        if night == 17:
            # The run staged on night 11 is promoted after newer runs: it enters the history now.
            make_current(conn, run_id=staged[-1], reason="test")
            assert current(conn)[:2] == (staged[-1], truth[staged[-1]])
            current_id = staged[-1]
            assert history(conn) == expected(truth, conn)
        rows, next_id = churn(rows, gone, next_id, rng)
    assert history_from_spells(conn) == expected(truth, conn)
    # A point lookup, as a BI user makes it.
    for customer in rng.choice(3000, 20) + 1:
        for run_id in list(truth)[-KEEP:]:
            if run_id in staged[:2]:
                continue
            found = conn.execute(
                "SELECT segment_id FROM segmentation_bi.customer_segment_history WHERE customer_id = %s AND run_id = %s",
                (int(customer), run_id),
            ).fetchall()
            assert found == ([(truth[run_id][customer],)] if customer in truth[run_id] else [])
    # Retention let the oldest runs go; only the tables something needs are left: the
    # current run's (the newest history run's too) and the staged or rejected runs still kept.
    pruned = {
        r for (r,) in conn.execute("SELECT run_id FROM segmentation.runs WHERE assignments_pruned_at IS NOT NULL")
    }
    assert pruned == set(list(truth)[:-KEEP])
    tables = {
        int(r[0].rsplit("_", 1)[1])
        for r in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'segmentation.customer_segments'::regclass"
        )
    }
    assert tables == {list(truth)[-1]}
