"""What a run compares itself with: the previous published run and the drift against it.
These functions run in their caller's transaction (see segmentation.db)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.segments import adjusted_rand_index
from segmentation.db import scalar
from segmentation.store.partitions import exists, partition_name


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
    row = conn.execute("SELECT run_id, source_table, features, n_customers FROM segmentation.current_run").fetchone()
    if row is None:
        return None
    run_id, source_table, features, n_customers = row
    sizes: dict[int, int] = dict(
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
    return int(scalar(conn, "SELECT coalesce(max(segment_id), 0) + 1 FROM segmentation.segments"))


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
    that run's per-customer rows were pruned. Run in a transaction: its settings are local."""
    if not exists(conn, previous.run_id):
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
    return Drift(previous.run_id, compared, changed, changed / compared if compared else None, ari, added, removed)
