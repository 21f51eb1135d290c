"""Reading one run back from the database, for its report artifacts and for `segmentation
show`: the run row, segments, centroids, k-selection curve and a bounded sample of customers
with their feature values. Both show what BI sees, since they read what was stored."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from segmentation.core import plots, run_text
from segmentation.core.feature_plan import FeaturePlan, PlannedFeature
from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.rules import GENDER
from segmentation.identifiers import parse_column_name, parse_table_name
from segmentation.segmentations import DEFAULT
from segmentation.source import customer_keys
from segmentation.source.feature_sql import days_since
from segmentation.source.validity import gender_code
from segmentation.store import approvals

PLOT_SAMPLE_SIZE = 5_000
# A description in the picture's legend is cut to this, so the legend leaves room for the customers.
LEGEND_DESCRIPTION_CHARS = 90


@dataclass
class RunReport:
    run: dict
    segments: pd.DataFrame  # every column of segmentation.segments, one row per segment
    centroids: pd.DataFrame  # index segment_id, one column per feature, original units
    k_selection: pd.DataFrame  # k, inertia, silhouette
    sample: np.ndarray  # sampled customers x sample_features, original units
    sample_labels: np.ndarray  # their segment ids
    sample_features: list[str]  # the features with numbers to plot (not categories)
    # Per sampled customer, whether it is an outlier (distance above its segment's
    # outlier_distance); None: not known (a run made before migration 020)
    sample_outliers: np.ndarray | None = None

    @property
    def features(self) -> list[str]:
        return list(self.run["features"])

    def markdown(self) -> str:
        return run_text.summary_markdown(self.run, self.segments, self.centroids)

    def text(self) -> str:
        """For the command line: the run line and the segment table."""
        table = run_text.segment_table(self.segments, self.centroids, self.features).plain()
        outliers = run_text.outlier_line(self.segments)
        described = "".join(
            f"\n{line}" for line in [*([outliers] if outliers else []), *run_text.description_lines(self.segments)]
        )
        return f"{run_text.run_line(self.run, self.segments)}\n{table}{described}"

    def k_selection_rows(self) -> list[dict]:
        return run_text.k_selection_rows(self.k_selection, self.run.get("k"))

    def png(self) -> bytes:
        curve = plots.KCurve(
            k=self.k_selection["k"].to_numpy(),
            inertia=self.k_selection["inertia"].to_numpy(dtype=float),
            silhouette=self.k_selection["silhouette"].to_numpy(dtype=float),
            chosen=self.run.get("k"),
        )
        return plots.render(
            self.sample,
            self.sample_labels,
            self.sample_features,
            self.centroids,
            curve,
            self._title(),
            self._legend(),
            self.sample_outliers,
        )

    def _legend(self) -> dict[int, str]:
        """Per segment: its id, its name when the segments table has one, its share of all
        customers (the sample's counts would only say how the sample fell), and under it its
        description when it has one."""
        legend = {}
        for row in self.segments.to_dict("records"):
            name = row.get("segment_name")
            label = f"{row['segment_id']}: {name}" if isinstance(name, str) and name else f"segment {row['segment_id']}"
            label = f"{label} ({100 * row['share']:.1f}%)"
            description = row.get("description")
            if isinstance(description, str) and description:
                label += "\n" + textwrap.shorten(description, LEGEND_DESCRIPTION_CHARS, placeholder="...")
            legend[int(row["segment_id"])] = label
        return legend

    def _title(self) -> str:
        return (
            f"run {self.run['run_id']}: {self.run['n_customers'] or 0:,} customers in {run_text.segments_phrase(self.run, self.segments)} "
            f"from {self.run['source_table']}"
        )


def _frame(conn: psycopg.Connection, query: str, run_id: int) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(query, (run_id,))
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description or []])


def load(conn: psycopg.Connection, run_id: int, sample_size: int = PLOT_SAMPLE_SIZE, seed: int = 0) -> RunReport | None:
    """Run it in one transaction, so every part is read from one version of the run."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        run = cur.execute("SELECT * FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()
        if run is None:
            return None
        # How the run last became current in its segmentation, and whether it still is.
        run["made_current"] = cur.execute(
            """SELECT switched_at, from_run_id, action, reason,
                      switch_id = (SELECT max(m.switch_id) FROM segmentation.current_run_log AS m
                                   WHERE m.segmentation = l.segmentation) AS still
               FROM segmentation.current_run_log AS l WHERE run_id = %s ORDER BY switch_id DESC LIMIT 1""",
            (run_id,),
        ).fetchone()
    run["approval"] = approvals.latest(conn, run_id)
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        run["feature_drift"] = cur.execute(
            """SELECT feature, previous_run_id, psi FROM segmentation.feature_distributions
               WHERE run_id = %s ORDER BY psi DESC NULLS LAST, feature""",
            (run_id,),
        ).fetchall()
    # SELECT *: columns added to segments later come along and are shown.
    segments = _frame(conn, "SELECT * FROM segmentation.segments WHERE run_id = %s ORDER BY segment_id", run_id)
    long = _frame(
        conn,
        "SELECT segment_id, feature, level, centroid FROM segmentation.segment_centroids WHERE run_id = %s",
        run_id,
    )
    centroids = _centroid_cells(long)
    k_selection = _frame(
        conn, "SELECT k, inertia, silhouette FROM segmentation.k_selection WHERE run_id = %s ORDER BY k", run_id
    )
    features = [parse_column_name(f) for f in run["features"]]
    run["features"] = features
    plotted, values = _plotted(conn, run_id, features)
    sample, labels, distances = (
        _sample(conn, run, values, sample_size, seed) if len(segments) and values else _empty(len(values))
    )
    return RunReport(
        run, segments, centroids, k_selection, sample, labels, plotted, _outliers(segments, labels, distances)
    )


def _outliers(segments: pd.DataFrame, labels: np.ndarray, distances: np.ndarray) -> np.ndarray | None:
    """Which sampled customers are outliers: further from their centroid than their segment's
    outlier_distance, as current_customer_segments.outlier says. None when the run has no
    outlier distances (made before migration 020)."""
    if "outlier_distance" not in segments or segments["outlier_distance"].isna().all():
        return None
    threshold = dict(zip(segments["segment_id"].astype(int), segments["outlier_distance"].astype(float)))
    limits = np.array([threshold.get(int(s), np.nan) for s in labels], dtype=float)
    with np.errstate(invalid="ignore"):
        return np.asarray(distances > limits)  # NaN (unknown) on either side: not marked


def _centroid_cells(long: pd.DataFrame) -> pd.DataFrame:
    """One row per segment and one column per feature: a number's centroid, or a category's
    most common level with its share ("pro 72%")."""
    if not len(long):
        return pd.DataFrame(index=pd.Index([], name="segment_id"))
    numbers = long[long["level"].isna()]
    cells = (
        numbers.pivot(index="segment_id", columns="feature", values="centroid").astype(object)
        if len(numbers)
        else pd.DataFrame(index=pd.Index(sorted(set(long["segment_id"])), name="segment_id"))
    )
    levels = long[long["level"].notna()]
    for (segment, feature), group in levels.groupby(["segment_id", "feature"]):
        top = group.iloc[int(np.argmax(group["centroid"].to_numpy(dtype=float)))]
        if feature not in cells.columns:
            cells[feature] = None
        cells.at[segment, feature] = f"{top['level']} {float(top['centroid']):.0%}"
    return cells


def _plotted(conn: psycopg.Connection, run_id: int, features: list[str]) -> tuple[list[str], list[sql.Composable]]:
    """The features a picture can place customers by, and each one's value in a source row
    (alias src) in the feature's own units: numbers as they are, days_since in days, no categories."""
    row = conn.execute("SELECT spec, as_of FROM segmentation.run_models WHERE run_id = %s", (run_id,)).fetchone()
    # No plan kept: bare column names, gender read by the gender rule as they always were.
    plan = (
        FeaturePlan.from_description(row[0], row[1])
        if row is not None and row[0] is not None
        else FeaturePlan(
            tuple(
                PlannedFeature(FeatureSpec.model_validate({"column": f}), "text" if f == GENDER else "float8")
                for f in features
            )
        )
    )
    plotted: list[str] = []
    values: list[sql.Composable] = []
    for feature in plan.features:
        col = sql.SQL("src.{}").format(sql.Identifier(feature.column))
        if feature.spec.kind == "category":
            continue
        if feature.gender_rule:
            values.append(sql.SQL("({})::float8").format(gender_code(col, sql.NULL)))
        elif feature.spec.kind == "days_since" and plan.as_of is not None:
            values.append(days_since(col, plan.as_of))
        else:
            values.append(sql.SQL("{}::float8").format(col))
        plotted.append(feature.column)
    return plotted, values


def _empty(n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty((0, n_features)), np.empty(0, dtype=int), np.empty(0)


def _sample(
    conn: psycopg.Connection, run: dict, values: list[sql.Composable], size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `size` of the run's customers, uniformly at random, with their current values in
    the source table (a customer deleted since the run is left out): the values, segment ids and
    distances (NaN when the run has none: restored from the history)."""
    n = int(run["n_customers"] or 0)
    if n == 0 or size <= 0:
        return _empty(len(values))
    # Bernoulli sampling reads the run's partition once instead of sorting all of it; a
    # little over `size` is drawn so that the random trim below rarely comes up short.
    percent = min(100.0, 100.0 * size * 1.2 / n)
    table = parse_table_name(run["source_table"])
    id_column = parse_column_name((run.get("params") or {}).get("id_column") or "customer_id")
    query = sql.SQL(
        "SELECT cs.segment_id, coalesce(cs.distance, 'NaN'), {values} FROM segmentation.customer_segments AS cs "
        "TABLESAMPLE BERNOULLI (%s) REPEATABLE (%s) "
        "{ids}JOIN {table} AS src ON src.{id} = {id_value} WHERE cs.run_id = %s LIMIT %s"
    ).format(
        values=sql.SQL(", ").join(values),
        table=table.identifier(),
        id=sql.Identifier(id_column),
        # Ids keyed by hash: each key's id from segmentation.customer_ids, then the source's row by
        # its id (its index), never the key of every source row.
        ids=sql.SQL("")
        if run.get("id_type") is None
        else sql.SQL(
            "JOIN segmentation.customer_ids AS m ON m.segmentation = {} AND m.customer_key = cs.customer_id "
        ).format(sql.Literal(run["segmentation"])),
        id_value=sql.SQL("cs.customer_id")
        if run.get("id_type") is None
        else sql.SQL("m.customer_id::{}").format(customer_keys.type_name(run["id_type"])),
    )
    try:
        # A savepoint in the caller's transaction: this read may fail and the rest still stands.
        with conn.transaction():
            rows = conn.execute(query, (percent, seed, run["run_id"], 2 * size)).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction):
        # The source changed shape since the run: the picture shows no customers, the rest stands.
        return _empty(len(values))
    if len(rows) > size:
        rows = [rows[i] for i in np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))]
    data = np.array(rows, dtype=float).reshape(-1, len(values) + 2)
    data = data[~np.isnan(data[:, 2:]).any(axis=1)]  # a value made NULL in the source since the run
    return data[:, 2:], data[:, 0].astype(int), data[:, 1]


def recent_runs(conn: psycopg.Connection, limit: int, segmentation: str = DEFAULT) -> list[dict]:
    """The segmentation's newest runs, with whether each is current and whether it can be made
    current."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            """SELECT r.run_id, r.status, coalesce(r.published_at, r.finished_at, r.started_at) AS at,
                      r.k, r.n_customers, r.churn, r.forced,
                      r.run_id = c.run_id AS is_current,
                      r.status IN ('published', 'staged', 'rejected') AND r.assignments_pruned_at IS NULL AS kept
               FROM segmentation.runs r
               LEFT JOIN (SELECT run_id FROM segmentation.current_run_log WHERE segmentation = %(s)s
                          ORDER BY switch_id DESC LIMIT 1) c ON true
               WHERE r.segmentation = %(s)s
               ORDER BY r.run_id DESC LIMIT %(limit)s""",
            {"s": segmentation, "limit": limit},
        ).fetchall()
