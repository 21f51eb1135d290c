"""What a run compares itself with: the previous published run, drift against it, and
retention of per-customer history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.segments import adjusted_rand_index
from segmentation.runs import partition_name


@dataclass(frozen=True)
class PreviousRun:
    run_id: int
    source_table: str
    features: tuple[str, ...]
    n_customers: int
    segment_ids: np.ndarray  # (k,)
    centroids: np.ndarray  # (k, features), original units, in `features` order
    sizes: dict[int, int]

    def same_table(self, source_table: str) -> bool:
        """Customers (drift, the customer-count gate) compare only between runs on one table."""
        return self.source_table == source_table

    def comparable(self, source_table: str, features: Sequence[str]) -> bool:
        """Centroids can only be matched between runs on the same table and features."""
        return self.same_table(source_table) and self.features == tuple(features)


def previous_run(conn: psycopg.Connection) -> PreviousRun | None:
    row = conn.execute(
        "SELECT run_id, source_table, features, n_customers FROM segmentation.current_run"
    ).fetchone()
    if row is None:
        return None
    run_id, source_table, features, n_customers = row
    sizes = dict(
        conn.execute(
            "SELECT segment_id, n_customers FROM segmentation.segments WHERE run_id = %s ORDER BY segment_id",
            (run_id,),
        ).fetchall()
    )
    ids = np.array(sorted(sizes), dtype=np.int64)
    centroids = np.zeros((len(ids), len(features)))
    position = {f: j for j, f in enumerate(features)}
    index = {s: i for i, s in enumerate(ids)}
    for segment_id, feature, centroid in conn.execute(
        "SELECT segment_id, feature, centroid FROM segmentation.segment_centroids WHERE run_id = %s", (run_id,)
    ):
        if feature in position and segment_id in index:
            centroids[index[segment_id], position[feature]] = centroid
    return PreviousRun(run_id, source_table, tuple(features), n_customers, ids, centroids, sizes)


def next_segment_id(conn: psycopg.Connection) -> int:
    """Segment ids are never reused: every run's segments are kept, so the maximum is stable."""
    return conn.execute("SELECT coalesce(max(segment_id), 0) + 1 FROM segmentation.segments").fetchone()[0]


@dataclass(frozen=True)
class Drift:
    previous_run_id: int
    customers_compared: int
    customers_changed: int
    churn: float | None
    adjusted_rand_index: float | None
    customers_added: int
    customers_removed: int


def measure_drift(conn: psycopg.Connection, run_id: int, previous: PreviousRun) -> Drift | None:
    """Compare assignments customer by customer with the previous published run. None when
    that run's per-customer rows were pruned."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (partition_name(previous.run_id).as_string(conn),)).fetchone()[0]
    conn.commit()
    if not exists:
        return None
    # The new run's table has no statistics yet, so the planner guesses billions of rows and
    # turns on JIT (0.15 s of compiling) and a sort that spills to disk. With JIT off and the
    # sorts in memory this takes half the time at a million customers (this transaction only).
    conn.execute("SET LOCAL jit = off")
    conn.execute("SET LOCAL work_mem = '256MB'")
    cells = conn.execute(
        sql.SQL(
            """SELECT o.segment_id, n.segment_id, count(*)
               FROM {old} AS o FULL JOIN {new} AS n USING (customer_id)
               GROUP BY 1, 2"""
        ).format(old=partition_name(previous.run_id), new=partition_name(run_id))
    ).fetchall()
    conn.commit()
    added = sum(c for o, n, c in cells if o is None)
    removed = sum(c for o, n, c in cells if n is None)
    both = [(o, n, c) for o, n, c in cells if o is not None and n is not None]
    compared = sum(c for _, _, c in both)
    changed = sum(c for o, n, c in both if o != n)
    ari = None
    if compared:
        olds = sorted({o for o, _, _ in both})
        news = sorted({n for _, n, _ in both})
        table = np.zeros((len(olds), len(news)))
        for o, n, c in both:
            table[olds.index(o), news.index(n)] = c
        ari = adjusted_rand_index(table)
    return Drift(
        previous.run_id, compared, changed, changed / compared if compared else None, ari, added, removed
    )


def prune(conn: psycopg.Connection, keep: int) -> list[int]:
    """Drop the per-customer rows of all but the newest `keep` published runs, a whole
    partition at a time (never a DELETE of millions of rows), and the partitions of runs
    that failed after attaching. Run-level rows stay. The current run is always kept."""
    keep = max(1, keep)
    old = [
        r[0]
        for r in conn.execute(
            """(SELECT run_id FROM segmentation.runs
                WHERE status = 'published' AND assignments_pruned_at IS NULL
                ORDER BY published_at DESC, run_id DESC OFFSET %s)
               UNION ALL
               SELECT r.run_id FROM segmentation.runs r
               JOIN pg_inherits i ON i.inhrelid = to_regclass(format('segmentation.customer_segments_run_%%s', r.run_id))
               WHERE r.status IN ('failed', 'rejected')""",
            (keep,),
        )
    ]
    conn.commit()
    autocommit = conn.autocommit
    conn.autocommit = True  # DETACH ... CONCURRENTLY cannot run inside a transaction block
    try:
        # Never queue for long behind a BI session: a blocked DETACH would hold up every
        # reader that arrives after it. What is not pruned now is pruned by a later run.
        conn.execute("SET lock_timeout = '10s'")
        for run_id in old:
            table = partition_name(run_id)
            state = conn.execute(
                "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)", (table.as_string(conn),)
            ).fetchone()
            if state is not None:
                # CONCURRENTLY: BI readers of the parent are never blocked behind the detach. A
                # detach interrupted half-way is left pending and must be finalised instead.
                action = "FINALIZE" if state[0] else "CONCURRENTLY"
                conn.execute(
                    sql.SQL("ALTER TABLE segmentation.customer_segments DETACH PARTITION {} {}").format(
                        table, sql.SQL(action)
                    )
                )
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.execute(
                "UPDATE segmentation.runs SET assignments_pruned_at = now() WHERE run_id = %s AND status = 'published'",
                (run_id,),
            )
    finally:
        conn.execute("RESET lock_timeout")
        conn.autocommit = autocommit
    return old
