"""The run and `predict` agree on every customer, for any rows and any feature specs: a
property-based test (hypothesis) over generated tables and specs, against a real PostgreSQL.

The run's side is what the flow does, without Prefect: the source resolved and read with the
binary COPY of its valid rows (segmentation.source), scaled and assigned in numpy
(segmentation.passes.Centroids). The other side is the model's scoring function, given each
source row as jsonb. Both must give every valid customer the same segment, distance and margin
(to the bit) and outlier flag, and every row the run quarantines no segment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.model import Scaler, fit_kmeans, outlier_distances
from segmentation.passes import Centroids
from segmentation.source import catalog
from segmentation.source.stream import Chunk, stream_valid
from segmentation.store import scoring

AS_OF = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
LEVELS = ["pro", "basic", "free", "Ünïcode level", "other", "a'quote"]

amounts = st.one_of(
    st.none(),
    st.sampled_from([Decimal("-3"), Decimal("0"), Decimal("0.01"), Decimal("1e6")]),
    st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False),
)
visits = st.one_of(st.none(), st.integers(min_value=0, max_value=500))
plans = st.one_of(st.none(), st.sampled_from(LEVELS))
signups = st.one_of(
    st.none(),
    st.just("infinity"),
    st.dates(min_value=date(2015, 1, 1), max_value=date(2026, 12, 31)).map(str),
)
seen = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2026, 5, 31)).map(
        lambda d: (d.replace(tzinfo=UTC) + timedelta(microseconds=7)).isoformat()
    ),
)
rows = st.lists(st.tuples(amounts, visits, plans, signups, seen), min_size=6, max_size=40)

missing = st.sampled_from(["quarantine", "segment", 0.0, 12.5])


@st.composite
def specs(draw) -> list[FeatureSpec]:
    chosen = []
    if draw(st.booleans()):
        chosen.append(
            FeatureSpec(
                column="amount",
                transform=draw(st.sampled_from(["none", "log1p"])),
                clip=draw(st.sampled_from([None, 0.9, 0.5])),
                missing=draw(missing),
                weight=draw(st.sampled_from([1.0, 2.5])),
            )
        )
    if draw(st.booleans()):
        chosen.append(
            FeatureSpec(column="visits", transform=draw(st.sampled_from(["none", "log1p"])), missing=draw(missing))
        )
    elif draw(st.booleans()):  # integer codes as a category: with plan, two categories read in one pass
        chosen.append(
            FeatureSpec(column="visits", kind="category", max_levels=draw(st.integers(min_value=1, max_value=3)))
        )
    if draw(st.booleans()):
        chosen.append(
            FeatureSpec(
                column="plan",
                kind="category",
                max_levels=draw(st.integers(min_value=1, max_value=4)),
                missing=draw(st.sampled_from(["quarantine", "segment"])),
                weight=draw(st.sampled_from([1.0, 0.5])),
            )
        )
    if draw(st.booleans()):
        chosen.append(
            FeatureSpec(
                column="signup",
                kind="days_since",
                transform=draw(st.sampled_from(["none", "log1p"])),
                missing=draw(missing),
            )
        )
    if draw(st.booleans()) or not chosen:
        chosen.append(FeatureSpec(column="last_seen", kind="days_since", missing=draw(missing)))
    return chosen


def _table(conn, generated) -> None:
    conn.execute("DROP TABLE IF EXISTS public.t")
    conn.execute(
        """CREATE TABLE public.t (id bigint PRIMARY KEY, amount numeric, visits integer, plan text,
                                  signup date, last_seen timestamptz)"""
    )
    with conn.cursor() as cur, cur.copy("COPY public.t FROM STDIN") as copy:
        for i, row in enumerate(generated, start=1):
            copy.write_row((i, *row))


def _run_side(conn, source) -> tuple[Chunk, Centroids] | None:
    """The valid rows as the run reads them, and a model fitted as the run fits one."""
    with conn.transaction():
        chunks = list(stream_valid(conn, source, 1000))
    if not chunks:
        return None
    chunk = Chunk(
        np.concatenate([c.ids for c in chunks]),
        np.concatenate([c.X for c in chunks]),
        np.concatenate([c.gender for c in chunks]),
        None if chunks[0].rule is None else np.concatenate([c.rule for c in chunks]),
    )
    clustered = chunk.X if chunk.rule is None else chunk.X[chunk.rule == 0]
    if len(np.unique(clustered, axis=0)) < 2:
        return None
    plan = source.plan
    scaler = Scaler.fit(clustered, plan.caps(clustered), plan.weights())
    Z = scaler.transform(clustered)
    model = fit_kmeans(Z, 2, 0, 1)
    ids = np.array([101, 102] + [201 + i for i in range(len(plan.rule_features))], dtype=np.int64)
    # As the flow keeps them: the training set's outlier distances, then 0 per missing-value segment.
    outliers = np.concatenate([outlier_distances(model.cluster_centers_, Z), np.zeros(len(plan.rule_features))])
    return chunk, Centroids(model.cluster_centers_, scaler, ids, plan, outliers)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(generated=rows, chosen=specs())
def test_the_run_and_predict_agree_on_every_row(conn, generated, chosen):
    _table(conn, generated)
    with conn.transaction():
        source = catalog.resolve_source(conn, "public.t", "id", chosen, AS_OF)
    side = _run_side(conn, source)
    assume(side is not None)
    assert side is not None
    chunk, centroids = side
    labels, distances, margins = centroids.assign(chunk)
    flagged = centroids.outliers(labels, distances)
    assert flagged is not None and centroids.outlier_distance is not None
    run_id = conn.execute(
        "INSERT INTO segmentation.runs (source_table, features) VALUES ('public.t', %s) RETURNING run_id",
        (list(source.features),),
    ).fetchone()[0]
    with conn.transaction():
        scoring.save(
            conn,
            run_id,
            scoring.Model(
                source.inputs,
                centroids.scaler.mean,
                centroids.scaler.scale,
                centroids.centers,
                centroids.segment_ids,
                [f"segment {i}" for i in centroids.segment_ids],
                source.plan,
                centroids.scaler.cap,
                centroids.outlier_distance,
            ),
        )
    predicted = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT t.id, p.segment_id, p.distance, p.margin, p.outlier "
            "FROM public.t CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(t), %s) p",
            (run_id,),
        )
    }
    expected = {
        # A missing-value segment's margin is NaN in the pass, written NULL.
        # No outlier distance (a segment no training row is nearest): NULL, not a flag.
        int(i): (
            int(centroids.segment_ids[label]),
            float(d),
            None if np.isnan(m) else float(m),
            None if np.isnan(centroids.outlier_distance[label]) else bool(o),
        )
        for i, label, d, m, o in zip(chunk.ids, labels, distances, margins, flagged)
    }
    for row_id, (segment, distance, margin, outlier) in predicted.items():
        if row_id not in expected:
            assert segment is None, f"row {row_id} was not valid for the run, yet predict gives segment {segment}"
            assert (distance, margin, outlier) == (None, None, None)
            continue
        want_segment, want_distance, want_margin, want_outlier = expected[row_id]
        assert segment == want_segment, f"row {row_id}: predict {segment}, the run {want_segment}"
        assert distance == want_distance, f"row {row_id}: distance {distance!r} in SQL, {want_distance!r} in the run"
        assert margin == want_margin, f"row {row_id}: margin {margin!r} in SQL, {want_margin!r} in the run"
        assert outlier == want_outlier, f"row {row_id}: outlier {outlier!r} in SQL, {want_outlier!r} in the run"
