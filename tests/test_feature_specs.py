"""Feature specs against a real PostgreSQL and the real flow, on the CRM shape (`generate
--shape crm`): every kind, transform and missing rule; centroids in the features' own units;
missing-value segments with stable ids; predict on raw rows agreeing with the run on every
customer."""

from __future__ import annotations

import json
import math
import re

import pytest
from psycopg.types.json import Jsonb

from segmentation import crm_shape
from segmentation.flows.segmentation import customer_segmentation
from support.docs import documented_sql

RFM = [
    {
        "column": "recency_days",
        "transform": "log1p",
        "missing": "segment",
        "missing_segment": "Never ordered",
        "label": "recency",
        "low": "Recent",
        "high": "Lapsed",
    },
    {"column": "frequency", "transform": "log1p", "label": "orders", "low": "One-off", "high": "Frequent"},
    {"column": "monetary", "transform": "log1p", "clip": 0.99, "label": "spend"},
    {"column": "plan", "kind": "category", "max_levels": 2},
    {"column": "signup_date", "kind": "days_since", "label": "tenure"},
]


@pytest.fixture
def crm(conn):
    """2,000 CRM customers, with integer ids in a table of their own (the run's id column)."""
    crm_shape.generate(conn, 2000, 3, "crm")
    conn.execute(
        """CREATE TABLE public.rfm AS SELECT row_number() OVER (ORDER BY id)::bigint AS customer_id, r.*
           FROM crm.customer_rfm r"""
    )
    conn.execute("ALTER TABLE public.rfm ADD PRIMARY KEY (customer_id)")
    return conn


def run(**params):
    return customer_segmentation(**params, return_state=True)


def test_an_rfm_segmentation_with_every_kind_publishes_in_the_features_units(crm):
    conn = crm
    state = run(source_table="public.rfm", features=RFM, n_clusters=4, min_segment_share=0.0, max_quarantined_share=1.0)
    assert state.is_completed(), state.message
    never = conn.execute("SELECT count(*) FROM public.rfm WHERE recency_days IS NULL").fetchone()[0]
    assert never > 0
    segments = conn.execute(
        "SELECT segment_id, segment_name, n_customers, missing_feature FROM segmentation_bi.current_segments"
    ).fetchall()
    ruled = [s for s in segments if s[3] is not None]
    assert [(s[1], s[2], s[3]) for s in ruled] == [("Never ordered", never, "recency_days")]
    assert sum(s[2] for s in segments) == 2000
    assert len(segments) == 5
    # The missing-value segment's customers are exactly those without a recency.
    ids = {
        r[0]
        for r in conn.execute(
            "SELECT customer_id FROM segmentation_bi.current_customer_segments WHERE segment_id = %s", (ruled[0][0],)
        )
    }
    assert ids == {r[0] for r in conn.execute("SELECT customer_id FROM public.rfm WHERE recency_days IS NULL")}
    # Centroids: numbers in their own units (log1p undone), the category as level shares.
    rows = conn.execute(
        "SELECT segment_id, feature, level, centroid, mean FROM segmentation_bi.current_segment_centroids"
    ).fetchall()
    levels = {r[2] for r in rows if r[1] == "plan"}
    assert None not in levels and "(other)" in levels and len(levels) == 3
    for segment_id, *_ in segments:
        shares = [r[4] for r in rows if r[0] == segment_id and r[1] == "plan"]
        assert math.isclose(sum(shares), 1.0)
    monetary = {r[0]: r for r in rows if r[1] == "monetary"}
    raw = dict(
        conn.execute(
            """SELECT s.segment_id, avg(r.monetary)::float8 FROM segmentation_bi.current_customer_segments s
           JOIN public.rfm r USING (customer_id) GROUP BY 1"""
        ).fetchall()
    )
    for segment_id, row in monetary.items():
        assert math.isclose(row[4], raw[segment_id], rel_tol=1e-9)  # the raw mean, not the log mean
    assert max(r[3] for r in monetary.values()) > 100  # centroids in currency, not in log units
    # The missing-value segment has no recency row.
    assert not [r for r in rows if r[0] == ruled[0][0] and r[1] == "recency_days"]
    # Names read in the features' own words.
    names = {s[1] for s in segments}
    assert "Never ordered" in names and any("Recent" in n and "Very frequent" in n for n in names)


def test_predict_takes_the_source_row_as_it_is_and_agrees_with_the_run(crm):
    conn = crm
    state = run(source_table="public.rfm", features=RFM, n_clusters=4, min_segment_share=0.0, max_quarantined_share=1.0)
    assert state.is_completed(), state.message
    disagree = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE p.segment_id IS DISTINCT FROM s.segment_id),
                  max(abs(p.distance - s.distance))
           FROM public.rfm r JOIN segmentation_bi.current_customer_segments s USING (customer_id)
           CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(r)) p"""
    ).fetchone()
    assert disagree[0] == 2000 and disagree[1] == 0 and disagree[2] < 1e-9
    # A customer who never ordered gets the missing-value segment; a value breaking a rule, no segment.
    never = conn.execute(
        """SELECT segment_name, distance FROM segmentation_bi.predict(
               '{"recency_days": null, "frequency": 0, "monetary": 0, "plan": "pro", "signup_date": "2025-01-01"}')"""
    ).fetchone()
    assert never == ("Never ordered", 0.0)
    for bad in ('"monetary": -5', '"monetary": "lots"', '"plan": null', '"signup_date": null'):
        customer = {"recency_days": 3, "frequency": 2, "monetary": 50, "plan": "pro", "signup_date": "2025-01-01"}
        key, value = bad.split(": ")
        customer[key.strip('"')] = json.loads(value)
        row = conn.execute("SELECT segment_id FROM segmentation_bi.predict(%s)", (Jsonb(customer),)).fetchone()
        assert row == (None,), bad
    # A level never seen in training scores as none of the kept levels (the "other" bucket).
    unseen = conn.execute(
        """SELECT segment_id FROM segmentation_bi.predict(
               '{"recency_days": 3, "frequency": 2, "monetary": 50, "plan": "platinum", "signup_date": "2025-01-01"}')"""
    ).fetchone()
    assert unseen[0] is not None


def test_a_rerun_keeps_every_segment_id_and_moves_nobody(crm):
    conn = crm
    first = run(source_table="public.rfm", features=RFM, n_clusters=4, min_segment_share=0.0, max_quarantined_share=1.0)
    second = run(
        source_table="public.rfm", features=RFM, n_clusters=4, min_segment_share=0.0, max_quarantined_share=1.0
    )
    assert first.is_completed() and second.is_completed(), second.message
    runs = conn.execute("SELECT run_id, churn, customers_changed FROM segmentation.runs ORDER BY run_id").fetchall()
    assert runs[1][1:] == (0.0, 0)
    segments = conn.execute(
        "SELECT run_id, segment_id, segment_name, n_customers FROM segmentation.segments ORDER BY run_id, segment_id"
    ).fetchall()
    by_run = [[s[1:] for s in segments if s[0] == r[0]] for r in runs]
    assert by_run[0] == by_run[1]  # the missing-value segment included


def test_the_cli_takes_compact_specs_and_a_bad_one_is_one_line(crm, capsys):
    from segmentation.cli import main

    features = "recency_days:log1p:missing=segment,frequency:log1p,monetary:log1p,plan:category"
    assert (
        main(
            [
                "run",
                "--source-table",
                "public.rfm",
                "--k",
                "3",
                "--features",
                features,
                "--min-segment-share",
                "0",
                "--max-quarantined-share",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "No recency days" in out
    # The segment table shows a category as its most common level and that level's share.
    assert re.search(r"(free|basic|pro|enterprise) \d+%", out), out
    stored = crm.execute("SELECT params -> 'features' FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone()[
        0
    ]
    assert stored == features.split(",")
    with pytest.raises(SystemExit) as refused:  # refused while reading the flags: no run is started
        main(["run", "--source-table", "public.rfm", "--features", "monetary:log2"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "feature 'monetary:log2': unknown option 'log2'" in err


def test_profiles_and_descriptions_come_with_the_run(crm):
    conn = crm
    state = run(source_table="public.rfm", features=RFM, n_clusters=4, min_segment_share=0.0, max_quarantined_share=1.0)
    assert state.is_completed(), state.message
    profile = conn.execute(
        """SELECT segment_id, value, population, z, rank FROM segmentation_bi.current_segment_profiles
           WHERE feature = 'monetary'"""
    ).fetchall()
    actual = dict(
        conn.execute(
            """SELECT s.segment_id, avg(r.monetary)::float8 FROM segmentation_bi.current_customer_segments s
               JOIN public.rfm r USING (customer_id) GROUP BY 1"""
        ).fetchall()
    )
    mean, spread = conn.execute("SELECT avg(monetary)::float8, stddev_pop(monetary)::float8 FROM public.rfm").fetchone()
    assert {p[0] for p in profile} == set(actual)  # every segment, the missing-value one too
    never = conn.execute("SELECT segment_id FROM segmentation_bi.current_segments WHERE missing_feature IS NOT NULL")
    (never,) = never.fetchone()
    # Monetary is read through log1p: for a segment KMeans found, as the model reads it. Its value
    # is the centroid of current_segment_centroids, its population the training mean of the capped
    # ln(1 + x) undone, and z on ln(1 + x); its raw mean stays in current_segment_centroids.mean.
    centroids = dict(
        conn.execute(
            "SELECT segment_id, centroid FROM segmentation_bi.current_segment_centroids WHERE feature = 'monetary'"
        ).fetchall()
    )
    raw_means = dict(
        conn.execute(
            "SELECT segment_id, mean FROM segmentation_bi.current_segment_centroids WHERE feature = 'monetary'"
        ).fetchall()
    )
    typical, log_spread = conn.execute(
        """WITH clustered AS (SELECT ln(1 + r.monetary::float8) AS x FROM segmentation_bi.current_customer_segments s
                              JOIN public.rfm r USING (customer_id) WHERE s.segment_id <> %s),
                -- the cap: a training value (inverted CDF), as FeaturePlan.caps takes it
                capped AS (SELECT least(x, (SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY x) FROM clustered)) AS x
                           FROM clustered)
           SELECT exp(avg(x)) - 1, stddev_pop(x) FROM capped""",
        (never,),
    ).fetchone()
    for segment_id, value, population, z, _ in profile:
        if segment_id == never:
            assert math.isclose(value, actual[segment_id], rel_tol=1e-9)
            assert math.isclose(population, mean, rel_tol=1e-9)
            assert math.isclose(z, (value - mean) / spread, rel_tol=1e-6)
            continue
        assert math.isclose(value, centroids[segment_id], rel_tol=1e-9)
        assert math.isclose(raw_means[segment_id], actual[segment_id], rel_tol=1e-9)
        assert value < actual[segment_id]  # the typical customer, below the mean its largest values pull up
        assert math.isclose(population, typical, rel_tol=1e-6)
        assert math.isclose(z, (math.log1p(value) - math.log1p(population)) / log_spread, rel_tol=1e-6)
    # Recency over the customers who have it; the missing-value segment has none.
    recency = conn.execute(
        "SELECT DISTINCT population FROM segmentation_bi.current_segment_profiles WHERE feature = 'recency_days'"
    ).fetchall()
    # Read through log1p too: the typical customer of those who have it.
    have = conn.execute("SELECT exp(avg(ln(1 + recency_days::float8))) - 1 FROM public.rfm").fetchone()[0]
    assert len(recency) == 1 and math.isclose(recency[0][0], have, rel_tol=1e-9)
    descriptions = conn.execute(
        "SELECT segment_name, description FROM segmentation_bi.current_segments ORDER BY segment_id"
    ).fetchall()
    assert len({d for _, d in descriptions}) == len(descriptions) == 5
    assert dict(descriptions)["Never ordered"].startswith("No recency")
    # In `segmentation show` too.
    from segmentation import operations

    text = operations.show().text()
    assert all(d in text for _, d in descriptions)
    # The query docs/bi.md gives: each segment's three most distinguishing traits.
    top = conn.execute(documented_sql("bi.md", "What makes a segment different")).fetchall()
    assert len(top) == 15 and [r[0] for r in top] == sorted(r[0] for r in top)


def test_input_drift_is_measured_per_feature_and_a_jump_can_stop_the_run(crm):
    conn = crm
    params = {
        "source_table": "public.rfm",
        "features": RFM,
        "n_clusters": 4,
        "min_segment_share": 0.0,
        "max_quarantined_share": 1.0,
    }
    first = run(**params)
    assert first.is_completed(), first.message
    drift = conn.execute("SELECT feature, psi, verdict FROM segmentation_bi.current_feature_drift").fetchall()
    assert {d[0] for d in drift} == {f["column"] for f in RFM} and all(d[1] is None for d in drift)
    # The same data again: nothing moved.
    second = run(**params, max_feature_drift=0.25)
    assert second.is_completed(), second.message
    drift = dict(conn.execute("SELECT feature, psi FROM segmentation_bi.current_feature_drift").fetchall())
    assert drift["monetary"] < 0.001 and drift["plan"] < 0.001
    # Spend jumps tenfold for everyone: a large shift in monetary, and the gate names it.
    conn.execute("UPDATE public.rfm SET monetary = monetary * 10")
    third = run(**params, max_feature_drift=0.25)
    assert third.is_failed() and third.name == "Rejected"
    assert "the inputs of feature monetary moved: PSI" in third.message
    psi = conn.execute(
        "SELECT psi FROM segmentation.feature_distributions WHERE feature = 'monetary' ORDER BY run_id DESC LIMIT 1"
    ).fetchone()[0]
    assert psi > 1
    assert "plan" not in third.message.split("PSI")[0]  # only the feature that moved is named
