"""What a run compares itself with: the previous published run and the drift against it.
These functions run in their caller's transaction (see segmentation.db)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from segmentation.core.binary_copy import Decoder
from segmentation.core.comparison import ABSENT, Changes, Comparison, SortedComparison, counts
from segmentation.core.input_drift import Distribution
from segmentation.core.segments import compare_from_changes
from segmentation.db import scalar
from segmentation.source.copy_out import copy_out
from segmentation.source.queries import IdRange
from segmentation.store import spells
from segmentation.store.partitions import exists, partition_name

# The in-memory comparison holds a slot (two bytes) for every id between the previous run's
# smallest and largest: used when that is at most this many slots per customer and in all.
SLOTS_PER_CUSTOMER = 4
MAX_SLOTS = 250_000_000
# Sparse ids compare in memory up to this many previous customers (about 11 bytes each).
MAX_SORTED = 30_000_000
PIECE_BYTES = 8 << 20


@dataclass(frozen=True)
class PreviousRun:
    run_id: int
    source_table: str
    features: tuple[str, ...]
    n_customers: int
    segment_ids: np.ndarray  # (k,) the clustered segments
    centroids: np.ndarray  # (k, inputs), in the model's input units, in `segment_ids` order
    sizes: dict[int, int]  # every segment, missing-value segments too
    plan_key: str = ""  # segmentation.core.feature_plan.FeaturePlan.key of the run
    rules: dict[str, int] = field(default_factory=dict)  # missing-value segments: feature -> segment id
    names: dict[int, str] = field(default_factory=dict)  # every segment's name, by id

    def same_table(self, source_table: str) -> bool:
        """Customers (drift, the customer-count gate) compare only between runs on one table."""
        return self.source_table == source_table

    def comparable(self, source_table: str, plan_key: str) -> bool:
        """Centroids can only be matched between runs on the same table and features (options
        and category levels included)."""
        return self.same_table(source_table) and self.plan_key == plan_key


def previous_run(conn: psycopg.Connection, segmentation: str) -> PreviousRun | None:
    """The segmentation's current run, which a new run of it compares itself with."""
    row = conn.execute(
        """SELECT run_id, source_table, features, n_customers FROM segmentation.runs
           WHERE run_id = (SELECT run_id FROM segmentation.current_run_log WHERE segmentation = %s
                           ORDER BY switch_id DESC LIMIT 1)""",
        (segmentation,),
    ).fetchone()
    if row is None:
        return None
    run_id, source_table, features, n_customers = row
    sizes: dict[int, int] = {}
    rules: dict[str, int] = {}
    names: dict[int, str] = {}
    for segment_id, size, rule, name in conn.execute(
        """SELECT segment_id, n_customers, missing_feature, segment_name FROM segmentation.segments
           WHERE run_id = %s ORDER BY segment_id""",
        (run_id,),
    ):
        sizes[segment_id] = size
        names[segment_id] = name
        if rule is not None:
            rules[rule] = segment_id
    model = conn.execute(
        "SELECT feature_mean, feature_scale, spec FROM segmentation.run_models WHERE run_id = %s", (run_id,)
    ).fetchone()
    if model is not None:
        centers = conn.execute(
            "SELECT segment_id, center FROM segmentation.model_centers WHERE run_id = %s ORDER BY label", (run_id,)
        ).fetchall()
        ids = np.array([c[0] for c in centers], dtype=np.int64)
        # The same arithmetic as the run's Scaler.inverse: its centroids in input units, to the bit.
        centroids = np.array([c[1] for c in centers], dtype=np.float64) * np.array(model[1]) + np.array(model[0])
        key = json.dumps(model[2], sort_keys=True) if model[2] is not None else json.dumps(list(features))
        return PreviousRun(run_id, source_table, tuple(features), n_customers, ids, centroids, sizes, key, rules, names)
    ids = np.array(sorted(s for s in sizes if s not in rules.values()), dtype=np.int64)
    centroids = np.zeros((len(ids), len(features)))
    position = {f: j for j, f in enumerate(features)}
    index = {s: i for i, s in enumerate(ids)}
    for segment_id, feature, centroid in conn.execute(
        "SELECT segment_id, feature, centroid FROM segmentation.segment_centroids WHERE run_id = %s AND level IS NULL",
        (run_id,),
    ):
        if feature in position and segment_id in index:
            centroids[index[segment_id], position[feature]] = centroid
    return PreviousRun(
        run_id,
        source_table,
        tuple(features),
        n_customers,
        ids,
        centroids,
        sizes,
        json.dumps(list(features)),
        rules,
        names,
    )


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
    that run's per-customer rows are gone. One pass finds the customers who changed
    (spells.compare, which keeps them for the history); the customers who stayed are the
    previous run's segment sizes less those who left each segment."""
    if not exists(conn, previous.run_id):
        return None
    found = compare_from_changes(spells.compare(conn, run_id, previous.run_id), previous.sizes)
    return Drift(previous.run_id, **asdict(found))


def _dense_enough(span: int, n_customers: int) -> bool:
    return span <= MAX_SLOTS and span <= SLOTS_PER_CUSTOMER * max(n_customers, 1)


def _comparison(
    conn: psycopg.Connection, previous: PreviousRun, smallest: int, largest: int, where: sql.Composable
) -> Comparison:
    """A Comparison for ids smallest..largest holding the previous run's rows that `where`
    selects. It gives up past a tenth of the previous run's customers changed, which bounds its
    memory."""
    comparison = Comparison(
        smallest,
        largest,
        max_changes=max_changes(previous),
        largest_segment_id=int(previous.segment_ids.max(initial=0)),
    )
    for columns in _previous_rows(conn, previous, where):
        comparison.add_previous(columns["customer_id"], columns["segment_id"])
    return comparison


def max_changes(previous: PreviousRun) -> int:
    return max(100_000, previous.n_customers // 10)


def _previous_rows(conn: psycopg.Connection, previous: PreviousRun, where: sql.Composable) -> Iterator[dict]:
    """The previous run's (customer_id, segment_id) rows, piece by piece, with binary COPY."""
    decoder = Decoder([("customer_id", "int8"), ("segment_id", "int4")])
    query = sql.SQL("COPY (SELECT customer_id, segment_id FROM {} {}) TO STDOUT (FORMAT BINARY)").format(
        partition_name(previous.run_id), where
    )
    for piece in copy_out(conn, query, PIECE_BYTES):
        yield decoder.feed(piece)
    decoder.finish()


def start_comparison(conn: psycopg.Connection, previous: PreviousRun) -> Comparison | SortedComparison | None:
    """The previous run's rows read into an in-memory Comparison (segmentation.core.comparison),
    for the new run's rows to be compared with as they are written; None when its rows are gone
    or its ids too sparse for it (the SQL comparison, measure_drift, then)."""
    if not exists(conn, previous.run_id):
        return None
    table = partition_name(previous.run_id)
    smallest, largest = conn.execute(
        sql.SQL("SELECT min(customer_id), max(customer_id) FROM {} WHERE run_id = %s").format(table),
        (previous.run_id,),
    ).fetchone() or (None, None)
    if smallest is None:
        return None
    if not _dense_enough(int(largest) - int(smallest) + 1, previous.n_customers):
        if previous.n_customers > MAX_SORTED:
            return None
        # Sparse ids (keys by hash): sorted, and looked up by binary search.
        sparse = SortedComparison(max_changes(previous))
        for columns in _previous_rows(conn, previous, sql.SQL("")):
            sparse.add_previous(columns["customer_id"], columns["segment_id"])
        return sparse
    return _comparison(conn, previous, int(smallest), int(largest), sql.SQL(""))


def compares_by_range(conn: psycopg.Connection, previous: PreviousRun, bounds: IdRange) -> bool:
    """Whether the ranges of ids of a pass split over workers, within bounds, can each compare
    in memory: the previous run's rows are still there, and the ids dense enough."""
    return exists(conn, previous.run_id) and _dense_enough(bounds[1] - bounds[0], previous.n_customers)


def range_comparison(conn: psycopg.Connection, previous: PreviousRun, ids: IdRange) -> Comparison:
    """A Comparison for one range of ids, holding the previous run's rows there."""
    # run_id too: without it, the range would be read in every run's partition.
    where = sql.SQL("WHERE run_id = {} AND customer_id >= {} AND customer_id < {}").format(
        sql.Literal(previous.run_id), sql.Literal(ids[0]), sql.Literal(ids[1])
    )
    return _comparison(conn, previous, ids[0], ids[1] - 1, where)


def changes_outside(conn: psycopg.Connection, previous: PreviousRun, bounds: IdRange) -> list[Changes]:
    """The previous run's customers with ids outside the ranges compared, piece by piece (for
    segmentation.core.comparison.join): none of them is in the new run."""
    where = sql.SQL("WHERE run_id = {} AND (customer_id < {} OR customer_id >= {})").format(
        sql.Literal(previous.run_id), sql.Literal(bounds[0]), sql.Literal(bounds[1])
    )
    return [
        (p["customer_id"], p["segment_id"], np.full(len(p["customer_id"]), ABSENT, dtype=np.int32))
        for p in _previous_rows(conn, previous, where)
    ]


def drift_from_changes(conn: psycopg.Connection, previous: PreviousRun, changes: Changes | None) -> Drift | None:
    """The drift from the changes found in memory while the run was written: kept in the
    session's table, as spells.compare keeps them. None when the comparison gave up."""
    if changes is None:
        return None
    ids, before, now = changes
    spells.keep_changes(conn, ids, before, now)
    found = compare_from_changes(counts(before, now), previous.sizes)
    return Drift(previous.run_id, **asdict(found))


def distributions(conn: psycopg.Connection, run_id: int) -> dict[str, Distribution]:
    """A run's feature distributions (segmentation.core.input_drift), by feature."""
    return {
        feature: Distribution(
            feature,
            units,
            tuple(shares),
            None if edges is None else tuple(edges),
            None if levels is None else tuple(levels),
        )
        for feature, units, shares, edges, levels in conn.execute(
            """SELECT feature, units, shares, edges, levels FROM segmentation.feature_distributions
               WHERE run_id = %s""",
            (run_id,),
        )
    }
