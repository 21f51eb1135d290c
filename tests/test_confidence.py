"""Confidence (sql/020_confidence.sql): each customer's margin (the distance to the second-nearest
centroid less the distance to its own) and outlier flag (further from its centroid than 99% of
its segment in training), on data of known structure, through the real flow and PostgreSQL: the
views, predict, the run's figures and its picture agree with what the structure says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from psycopg.types.json import Jsonb

from segmentation import migrations
from segmentation.flows.segmentation import customer_segmentation
from segmentation.store import readback
from support.docs import documented_sql
from support.schema import sql_copy

pytestmark = pytest.mark.usefixtures("prefect_harness")

# No midpoint of two centres is as near the third: a customer there is on their border.
CENTRES = np.array([[0.0, 0.0], [10.0, 0.0], [3.0, 12.0]])
PER_BLOB = 2000
# Far from every blob (each blob's sd is 1): 6 to 20 of them away from the nearest centre.
FAR = np.array([[5.0, 25.0], [-15.0, -15.0], [25.0, -8.0], [-12.0, 4.0], [18.0, 18.0]])
FAR_IDS = list(range(1_000_001, 1_000_001 + len(FAR)))


def blobs(conn, *, missing: int = 0) -> None:
    """public.blobs (id, x, y): three well-separated blobs of PER_BLOB customers each, the FAR
    customers, and `missing` customers with no y (for a missing-value segment)."""
    rng = np.random.default_rng(7)
    points = np.concatenate([c + rng.normal(0.0, 1.0, size=(PER_BLOB, 2)) for c in CENTRES])
    conn.execute("CREATE TABLE public.blobs (id bigint PRIMARY KEY, x double precision, y double precision)")
    with conn.cursor() as cur, cur.copy("COPY public.blobs (id, x, y) FROM STDIN") as copy:
        for i, (x, y) in enumerate(points, start=1):
            copy.write_row((i, float(x), float(y)))
        for i, (x, y) in zip(FAR_IDS, FAR):
            copy.write_row((i, float(x), float(y)))
        for i in range(missing):
            copy.write_row((2_000_001 + i, float(rng.normal(5.0, 3.0)), None))


def run(**params) -> int:
    state = customer_segmentation(
        source_table="public.blobs", id_column="id", n_clusters=3, n_init=2, return_state=True, **params
    )
    assert state.is_completed(), state.message
    return state.result()["run_id"]


def test_far_away_customers_are_the_outliers_and_border_customers_have_no_margin(conn):
    blobs(conn)
    run_id = run(features=["x", "y"])
    n = 3 * PER_BLOB + len(FAR)
    rows = conn.execute(
        "SELECT customer_id, segment_id, distance, margin, outlier FROM segmentation_bi.current_customer_segments"
    ).fetchall()
    assert len(rows) == n
    outliers = {r[0] for r in rows if r[4]}
    # Every far customer is an outlier; besides them, the customers beyond their segment's 99th
    # percentile: at most 1% of each segment, since here the training set is every customer.
    assert set(FAR_IDS) <= outliers
    assert len(outliers) <= 0.01 * n + 3
    assert all(r[4] is not None and r[3] is not None and r[3] >= 0 for r in rows)
    # The run's figures count the same outliers, and keep the thresholds the view compares with.
    segments = conn.execute(
        "SELECT segment_id, n_customers, outlier_distance, n_outliers FROM segmentation_bi.current_segments"
    ).fetchall()
    assert sum(s[3] for s in segments) == len(outliers)
    for segment_id, n_customers, threshold, n_outliers in segments:
        assert threshold > 0
        assert n_outliers <= 0.01 * n_customers + len(FAR) + 1
        mine = [r for r in rows if r[1] == segment_id]
        assert n_outliers == sum(r[2] > threshold for r in mine)
    # The margin, checked against the centroids in the run's standardised units.
    scale = np.array(
        conn.execute("SELECT feature_scale FROM segmentation.run_models WHERE run_id = %s", (run_id,)).fetchone()[0]
    )
    mean = np.array(
        conn.execute("SELECT feature_mean FROM segmentation.run_models WHERE run_id = %s", (run_id,)).fetchone()[0]
    )
    centres = np.array(
        [
            c[0]
            for c in conn.execute(
                "SELECT center FROM segmentation.model_centers WHERE run_id = %s ORDER BY label", (run_id,)
            )
        ]
    )
    between = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
    for label, centre in enumerate(centres):
        # A customer at a centroid: distance 0, margin the distance to the nearest other centroid.
        x, y = centre * scale + mean
        distance, margin, outlier = conn.execute(
            "SELECT distance, margin, outlier FROM segmentation_bi.predict(%s)", (Jsonb({"x": x, "y": y}),)
        ).fetchone()
        assert distance == pytest.approx(0, abs=1e-9)
        assert margin == pytest.approx(np.sort(between[label])[1], rel=1e-9)
        assert outlier is False
        for other in range(label + 1, len(centres)):
            # Midway between two centroids, nearer them than the third: on the border, margin 0.
            middle = (centre + centres[other]) / 2
            assert np.linalg.norm(centres - middle, axis=1).argsort()[2] not in (label, other)
            x, y = middle * scale + mean
            distance, margin = conn.execute(
                "SELECT distance, margin FROM segmentation_bi.segment_of(%s)", (Jsonb({"x": x, "y": y}),)
            ).fetchone()
            assert distance == pytest.approx(between[label, other] / 2, rel=1e-9)
            assert margin == pytest.approx(0, abs=1e-9)
    # predict agrees with the view for every customer: margin to the bit, and the outlier flag.
    assert conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE p.segment_id IS DISTINCT FROM v.segment_id
                                             OR p.distance IS DISTINCT FROM v.distance
                                             OR p.margin IS DISTINCT FROM v.margin
                                             OR p.outlier IS DISTINCT FROM v.outlier)
           FROM public.blobs b
           JOIN segmentation_bi.current_customer_segments v ON v.customer_id = b.id
           CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(b)) AS p"""
    ).fetchone() == (n, 0)
    # The documented queries: the border customers first, then the outliers per segment.
    border, per_segment = documented_sql("bi.md", "How sure is a segment").split(";\n\n")
    nearest = conn.execute(border).fetchall()
    assert len(nearest) == 100 and [r[3] for r in nearest] == sorted(r[3] for r in nearest)
    assert [(r[0], r[3]) for r in conn.execute(per_segment)] == sorted((s[0], s[3]) for s in segments)
    # The run's picture marks the outliers of its sample, as the view flags them.
    with conn.transaction():
        report = readback.load(conn, run_id, sample_size=n)
    assert report is not None and report.sample_outliers is not None
    assert int(report.sample_outliers.sum()) == len(outliers)
    assert report.png().startswith(b"\x89PNG")
    # segmentation show and the run's report: each segment's share of outliers, under the table.
    line = next(x for x in report.text().splitlines() if x.startswith("outliers"))
    for segment_id, n_customers, _, n_outliers in segments:
        assert f"segment {segment_id} {100 * n_outliers / n_customers:.1f}%" in line
    assert line in report.markdown()


def test_a_missing_value_segment_has_no_margin_and_no_outliers(conn):
    blobs(conn, missing=40)
    run(features=["x", "y:missing=segment"], min_segment_share=0.0)
    ruled = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE v.margin IS NULL AND v.outlier IS false)
           FROM segmentation_bi.current_customer_segments v
           JOIN segmentation_bi.current_segments s USING (segment_id)
           WHERE s.missing_feature = 'y'"""
    ).fetchone()
    assert ruled == (40, 40)
    assert conn.execute(
        "SELECT outlier_distance, n_outliers FROM segmentation_bi.current_segments WHERE missing_feature = 'y'"
    ).fetchone() == (0.0, 0)
    # Everyone else has both, and predict gives every customer what the view shows.
    assert conn.execute(
        "SELECT count(*) FROM segmentation_bi.current_customer_segments WHERE margin IS NULL OR outlier IS NULL"
    ).fetchone() == (40,)
    assert conn.execute(
        """SELECT count(*) FILTER (WHERE p.margin IS DISTINCT FROM v.margin OR p.outlier IS DISTINCT FROM v.outlier)
           FROM public.blobs b
           JOIN segmentation_bi.current_customer_segments v ON v.customer_id = b.id
           CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(b)) AS p"""
    ).fetchone() == (0,)


def test_a_run_restored_from_the_history_has_neither(conn):
    from segmentation.rollback import make_current

    blobs(conn)
    first = run(features=["x", "y"])
    conn.execute("UPDATE public.blobs SET x = x + 0.5 WHERE id % 5 = 0")
    run(features=["x", "y"])
    make_current(conn, run_id=first, reason="test")  # its own table is gone: written from the history
    assert (
        conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE distance IS NULL AND margin IS NULL AND outlier IS NULL)
           FROM segmentation_bi.current_customer_segments WHERE run_id = %s""",
            (first,),
        ).fetchone()
        == (3 * PER_BLOB + len(FAR),) * 2
    )


def test_runs_kept_before_020_score_with_null_margin_and_outlier(conn, tmp_path):
    """A scoring function written before 020 returns four columns: the migration wraps it."""
    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    conn.execute("DROP TABLE public.customers")
    migrations.upgrade(
        conn, sql_copy(tmp_path, below=20, bi_from=Path(__file__).parent / "data" / "bi_releases" / "019")
    )
    conn.execute("INSERT INTO segmentation.runs (run_id, source_table, features) VALUES (5, 'x', '{age}')")
    conn.execute(
        "INSERT INTO segmentation.run_models (run_id, features, feature_mean, feature_scale) VALUES (5, '{age}', '{0}', '{1}')"
    )
    conn.execute(
        """CREATE FUNCTION segmentation.predict_run_5(customer jsonb) RETURNS SETOF segmentation.prediction
           LANGUAGE sql STABLE PARALLEL SAFE
           AS $$ SELECT * FROM (SELECT 5::bigint, 3::integer, 'old'::text, 0.5::float8) AS p OFFSET 0 $$"""
    )
    conn.execute("SELECT segmentation.route_predict()")
    assert conn.execute("SELECT * FROM segmentation_bi.predict('{}', 5)").fetchall() == [(5, 3, "old", 0.5)]
    migrations.upgrade(conn)
    assert conn.execute("SELECT * FROM segmentation_bi.predict('{}', 5)").fetchall() == [(5, 3, "old", 0.5, None, None)]
