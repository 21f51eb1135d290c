"""Scoring in SQL: a run's model, compiled with the rules of a valid row into a SQL function
that assigns one customer, given as a jsonb row, to the run's nearest segment.

It computes what the flow computes, in the same order of operations on float8: each feature
as the flow reads it from the source (a number through numeric, gender coded 1/0 as in
training), standardised with the run's own scaler, the squared distance to each centre summed
feature by feature, the nearest centre (a tie goes to the lowest KMeans label, as numpy's
argmin does) and the square root. So it gives every valid customer of the run the run's own
segment id and distance, to the bit. The margin is the square root of the second least squared
distance (the least of the other centres') minus the distance, as the scoring pass computes it
(segmentation.core.model.assign_with_margin); outlier compares the distance with the segment's
outlier_distance, a constant of the run, as the views do. A missing, NULL, non-numeric
or out-of-range feature gives a row with NULL segment, not an error. The run's constants are
written into the function, and each step is fenced (OFFSET 0) so that PostgreSQL computes it
once per customer instead of once per use.

`segmentation.predict_run_<run_id>(customer jsonb)` is created when the run completes;
`segmentation_bi.predict(customer jsonb, run_id bigint)` routes to the run's own function;
`segmentation_bi.predict(customer jsonb)` and `predict(customer jsonb, segmentation text)` take
the current run's function while that run is current in the query's own snapshot, as the views
read it, so a query never scores with one run while its views show another. All three are
rewritten whenever a model is kept or dropped and whenever a run becomes current (route);
sql/bi/predict.sql defines them. These functions run in their caller's transaction (see segmentation.db)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from segmentation.core.feature_plan import FeaturePlan
from segmentation.core.rules import GenderRule, NumericRule, rule_for
from segmentation.db import give_to_writer, scalar
from segmentation.source import feature_sql
from segmentation.source.validity import gender_code, within

_RETURNS = sql.SQL("RETURNS SETOF segmentation.prediction")


@dataclass(frozen=True)
class Model:
    features: tuple[str, ...]  # the model's inputs (bare column names: the features)
    mean: np.ndarray  # (inputs,)
    scale: np.ndarray  # (inputs,)
    centers: np.ndarray  # (k, inputs), standardised units, by KMeans label
    segment_ids: np.ndarray  # (k + missing-value segments,), by KMeans label, then by rule
    names: Sequence[str]  # likewise
    plan: FeaturePlan | None = None  # None: bare column names (a run kept before feature specs)
    cap: np.ndarray | None = None  # (inputs,) clip caps, inf for none; None: nothing capped
    # (k + missing-value segments,) like segment_ids: the distance above which a customer is an
    # outlier (NaN: unknown); None: a model without one, whose outlier is NULL
    outlier_distance: np.ndarray | None = None

    @property
    def simple(self) -> bool:
        return self.plan is None or self.plan.simple


def run_function(run_id: int) -> sql.Identifier:
    return sql.Identifier("segmentation", f"predict_run_{int(run_id)}")


def save(conn: psycopg.Connection, run_id: int, model: Model) -> None:
    """Keep the run's model and create its scoring function."""
    described = None if model.simple or model.plan is None else Jsonb(model.plan.describe())
    conn.execute(
        """INSERT INTO segmentation.run_models (run_id, features, feature_mean, feature_scale, spec, as_of, feature_cap)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (
            run_id,
            list(model.features),
            model.mean.tolist(),
            model.scale.tolist(),
            described,
            None if model.plan is None else model.plan.as_of,
            None if model.cap is None else model.cap.tolist(),
        ),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO segmentation.model_centers (run_id, label, segment_id, center) VALUES (%s, %s, %s, %s)",
            [
                (run_id, label, int(model.segment_ids[label]), center.tolist())
                for label, center in enumerate(model.centers)
            ],
        )
    body = _body(conn, run_id, model) if model.simple else _plan_body(conn, run_id, model)
    conn.execute(
        sql.SQL("CREATE OR REPLACE FUNCTION {} (customer jsonb) {} LANGUAGE sql STABLE PARALLEL SAFE AS {}").format(
            run_function(run_id), _RETURNS, sql.Literal(body)
        )
    )
    give_to_writer(conn, "FUNCTION", sql.SQL("{} (jsonb)").format(run_function(run_id)))
    # predict(customer, run_id) calls it with the caller's rights (so that PostgreSQL can inline
    # it): the reader may execute it, nobody else, whoever created it.
    conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} (jsonb) FROM PUBLIC").format(run_function(run_id)))
    if scalar(conn, "SELECT to_regrole('segmentation_reader') IS NOT NULL"):
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION {} (jsonb) TO segmentation_reader").format(run_function(run_id))
        )
    route(conn)


def load(conn: psycopg.Connection, run_id: int) -> Model | None:
    row = conn.execute(
        """SELECT features, feature_mean, feature_scale, spec, as_of, feature_cap
           FROM segmentation.run_models WHERE run_id = %s""",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    centers = conn.execute(
        """SELECT c.segment_id, c.center, coalesce(s.segment_name, ''), s.outlier_distance
           FROM segmentation.model_centers c
           LEFT JOIN segmentation.segments s ON s.run_id = c.run_id AND s.segment_id = c.segment_id
           WHERE c.run_id = %s ORDER BY c.label""",
        (run_id,),
    ).fetchall()
    plan = None if row[3] is None else FeaturePlan.from_description(row[3], row[4])
    ruled: list[tuple[int, str, float | None]] = []
    if plan is not None and plan.rule_features:
        by_feature = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                """SELECT missing_feature, segment_id, segment_name, outlier_distance FROM segmentation.segments
                   WHERE run_id = %s AND missing_feature IS NOT NULL""",
                (run_id,),
            )
        }
        ruled = [by_feature[f.column] for f in plan.rule_features]
    return Model(
        tuple(row[0]),
        np.array(row[1], dtype=np.float64),
        np.array(row[2], dtype=np.float64),
        np.array([c[1] for c in centers], dtype=np.float64),
        np.array([c[0] for c in centers] + [r[0] for r in ruled], dtype=np.int64),
        [c[2] for c in centers] + [r[1] for r in ruled],
        plan,
        None if row[5] is None else np.array(row[5], dtype=np.float64),
        _thresholds([c[3] for c in centers] + [r[2] for r in ruled]),
    )


def _thresholds(values: list[float | None]) -> np.ndarray | None:
    """The outlier distances as stored: None when the run has none (made before sql/020)."""
    if all(v is None for v in values):
        return None
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def drop(conn: psycopg.Connection, run_id: int) -> None:
    """The run's model goes with its assignments (retention): it can no longer score."""
    conn.execute("DELETE FROM segmentation.model_centers WHERE run_id = %s", (run_id,))
    conn.execute("DELETE FROM segmentation.run_models WHERE run_id = %s", (run_id,))
    route(conn)
    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {} (jsonb)").format(run_function(run_id)))


def route(conn: psycopg.Connection) -> None:
    """Rewrite segmentation_bi.predict, all three, with a branch per kept model and per
    segmentation's current run: the SQL function segmentation.route_predict() (sql/bi/predict.sql)
    is the one place that writes them. Called whenever a model is kept or dropped, and whenever a
    run becomes current (segmentation.store.runs.record_switch)."""
    conn.execute("SELECT segmentation.route_predict()")


def _plan_body(conn: psycopg.Connection, run_id: int, model: Model) -> str:
    """The scoring function of a run with feature specs: the customer's values as the source
    holds them, through the plan's own SQL (segmentation.source.feature_sql, the expressions the
    run read its source with), then the cap, standardising and distances as the flow computes
    them. A value that breaks a rule of the run (a number that is not one, a negative value
    under log1p, a missing value the run quarantines) gives NULL segment; a customer lacking a
    feature with missing=segment gets that segment, at distance 0."""
    plan = model.plan
    assert plan is not None
    j = sql.Identifier
    nfeat = range(len(plan.features))
    extract, typed, checks = [], [], []
    for i, feature in zip(nfeat, plan.features):
        key, got = sql.Literal(feature.column), sql.SQL("j.{}").format(j(f"j{i}"))
        kind = feature.spec.kind
        if kind == "number" and not feature.gender_rule:
            extract.append(sql.SQL("a.customer -> {} AS {}").format(key, j(f"j{i}")))
            # A JSON number, or NULL when missing (absent, null); a value of another JSON type breaks the rules.
            typed.append(
                sql.SQL("CASE WHEN jsonb_typeof({g}) = 'number' THEN ({g})::numeric END AS {r}").format(
                    g=got, r=j(f"r{i}")
                )
            )
            rule = rule_for(feature.column)
            rule = rule if isinstance(rule, NumericRule) else NumericRule(feature.column)
            if feature.spec.transform == "log1p":
                rule = NumericRule(rule.column, 0.0 if rule.low is None else max(rule.low, 0.0), rule.high, rule.whole)
            r = sql.SQL("v.{}").format(j(f"r{i}"))
            checks.append(
                sql.SQL("(j.{g} IS NULL OR jsonb_typeof(j.{g}) = 'null' OR ({r} IS NOT NULL AND {within}))").format(
                    g=j(f"j{i}"), r=r, within=within(r, rule, "numeric")
                )
            )
        else:
            extract.append(sql.SQL("a.customer ->> {} AS {}").format(key, j(f"j{i}")))
            if kind == "days_since":
                cast = {"date": "date", "timestamp": "timestamp", "timestamptz": "timestamptz"}[feature.typname]
                typed.append(sql.SQL("({})::{} AS {}").format(got, sql.SQL(cast), j(f"r{i}")))
                r = sql.SQL("v.{}").format(j(f"r{i}"))
                bad = sql.SQL("{} IN ('infinity', '-infinity')").format(r)
                if feature.spec.transform == "log1p" and plan.as_of is not None:
                    bad = sql.SQL("{} OR {} < 0").format(bad, feature_sql.days_since(r, plan.as_of))
                checks.append(sql.SQL("({r} IS NULL OR NOT ({bad}))").format(r=r, bad=bad))
            elif feature.gender_rule:
                typed.append(sql.SQL("{} AS {}").format(got, j(f"r{i}")))
                r = sql.SQL("v.{}").format(j(f"r{i}"))
                checks.append(sql.SQL("({}) IS NOT NULL").format(gender_code(r, sql.NULL)))
            else:
                typed.append(sql.SQL("{} AS {}").format(got, j(f"r{i}")))
        if feature.spec.missing == "quarantine" and not feature.gender_rule:
            checks.append(sql.SQL("v.{} IS NOT NULL").format(j(f"r{i}")))
    raws = [feature_sql.Raw(sql.SQL("v.{}").format(j(f"r{i}"))) for i in nfeat]
    inputs = feature_sql.inputs(plan, raws)
    k = len(model.centers)
    standardised = []
    for n, expression in enumerate(inputs):
        value = expression
        if model.cap is not None and np.isfinite(model.cap[n]):
            value = sql.SQL("least({}, {})").format(expression, _float(model.cap[n]))
        z = sql.SQL("({} - {}) / {}").format(value, _float(model.mean[n]), _float(model.scale[n]))
        if plan.features[plan.inputs[n].feature].spec.transform == "log1p":
            # Only for a customer within the rules: log1p of a negative value does not compute.
            z = sql.SQL("CASE WHEN r.ok THEN {} END").format(z)
        standardised.append(sql.SQL("{} AS {}").format(z, j(f"z{n}")))
    squared = [
        sql.SQL("{} AS {}").format(
            sql.SQL(" + ").join(
                sql.SQL("(z.{z} - {c}) * (z.{z} - {c})").format(z=j(f"z{n}"), c=_float(model.centers[label, n]))
                for n in range(len(inputs))
            ),
            j(f"d{label}"),
        )
        for label in range(k)
    ]
    nearest = sql.SQL("least({})").format(
        sql.SQL(", ").join(sql.SQL("d.{}").format(j(f"d{label}")) for label in range(k))
    )
    # The nearest label, once: the first whose distance is the least (the lowest on a tie, as argmin).
    label = sql.SQL("CASE {} {} END").format(
        nearest,
        sql.SQL(" ").join(sql.SQL("WHEN d.{} THEN {}").format(j(f"d{n}"), sql.Literal(n + 1)) for n in range(k)),
    )

    def pick(values: Sequence[object], type_: str) -> sql.Composable:
        """The value of the customer's segment: by missing-value segment, else by label."""
        items = [v if isinstance(v, sql.Composable) else sql.Literal(v) for v in values]
        clustered = sql.SQL("(ARRAY[{}]::{}[])[n.label]").format(sql.SQL(", ").join(items[:k]), sql.SQL(type_))
        if len(values) == k:
            return sql.SQL("CASE WHEN r.ok THEN {} END").format(clustered)
        ruled = sql.SQL("(ARRAY[{}]::{}[])[r.rule]").format(sql.SQL(", ").join(items[k:]), sql.SQL(type_))
        return sql.SQL("CASE WHEN NOT r.ok THEN NULL WHEN r.rule > 0 THEN {} ELSE {} END").format(ruled, clustered)

    distance = sql.SQL("CASE WHEN NOT r.ok THEN NULL WHEN r.rule > 0 THEN 0::float8 ELSE sqrt(n.nearest) END")
    # The second least squared distance: the least of the other centres' (the nearest's own
    # label is known by then), as the scoring pass reads it; none in a missing-value segment.
    second = sql.SQL("CASE n.label {} END").format(
        sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(sql.Literal(n + 1), _least_but(k, n)) for n in range(k))
    )
    margin = sql.SQL("CASE WHEN NOT r.ok THEN NULL WHEN r.rule > 0 THEN NULL ELSE sqrt(m.second) - sqrt(n.nearest) END")
    outlier = (
        sql.SQL("NULL::boolean")
        if model.outlier_distance is None
        else sql.SQL("({}) > ({})").format(distance, pick(_floats(model.outlier_distance), "float8"))
    )
    body = sql.SQL(
        "SELECT * FROM (SELECT {run_id}::bigint, {segment_id}, {name}, {distance}, {margin}, {outlier} "
        "FROM (SELECT customer OFFSET 0) AS a "
        "CROSS JOIN LATERAL (SELECT {extract} OFFSET 0) AS j "
        "CROSS JOIN LATERAL (SELECT {typed} OFFSET 0) AS v "
        "CROSS JOIN LATERAL (SELECT {ok} AS ok, {rule} AS rule OFFSET 0) AS r "
        "CROSS JOIN LATERAL (SELECT {standardised} OFFSET 0) AS z "
        "CROSS JOIN LATERAL (SELECT {squared} OFFSET 0) AS d "
        "CROSS JOIN LATERAL (SELECT {nearest} AS nearest, {label} AS label OFFSET 0) AS n "
        "CROSS JOIN LATERAL (SELECT {second} AS second OFFSET 0) AS m) AS p OFFSET 0"
    ).format(
        run_id=sql.Literal(int(run_id)),
        segment_id=pick([int(s) for s in model.segment_ids], "integer"),
        name=pick(list(model.names), "text"),
        distance=distance,
        margin=margin,
        outlier=outlier,
        second=second,
        extract=sql.SQL(", ").join(extract),
        typed=sql.SQL(", ").join(typed),
        ok=sql.SQL(" AND ").join(checks) if checks else sql.SQL("true"),
        rule=feature_sql.rule(plan, raws),
        standardised=sql.SQL(", ").join(standardised),
        squared=sql.SQL(", ").join(squared),
        nearest=nearest,
        label=label,
    )
    return body.as_string(conn)


def _float(value: float) -> sql.Composable:
    """A float8 constant, exactly: its shortest round-trip text, which float8 input reads back
    to the same double."""
    return sql.SQL("{}::float8").format(sql.Literal(repr(float(value))))


def _least_but(k: int, label: int) -> sql.Composable:
    """The least squared distance to the centres other than `label` (0-based) of k; infinity
    when there is no other, as numpy's min over the rest of an infinity gives."""
    others = [sql.SQL("d.{}").format(sql.Identifier(f"d{other}")) for other in range(k) if other != label]
    return sql.SQL("least({})").format(sql.SQL(", ").join(others)) if others else sql.SQL("'Infinity'::float8")


def _floats(values: np.ndarray) -> list[sql.Composable]:
    """float8 constants, exactly; NaN (unknown) as NULL."""
    return [sql.SQL("NULL::float8") if np.isnan(v) else _float(v) for v in values]


def _body(conn: psycopg.Connection, run_id: int, model: Model) -> str:
    features = range(len(model.features))
    labels = range(len(model.centers))
    j = sql.Identifier
    # 1. Each feature's value as the customer's jsonb holds it.
    extract = [
        sql.SQL("a.customer ->> {} AS {}" if isinstance(rule_for(f), GenderRule) else "a.customer -> {} AS {}").format(
            sql.Literal(f), j(f"j{i}")
        )
        for i, f in zip(features, model.features)
    ]
    # 2. Standardised, or NULL when the value is missing or not valid by the rules.
    standardised = []
    for i, name in zip(features, model.features):
        rule = rule_for(name)
        col = sql.SQL("j.{}").format(j(f"j{i}"))
        if isinstance(rule, GenderRule):
            value = sql.SQL("({})::float8").format(gender_code(col, sql.NULL))
        else:
            number = sql.SQL("{}::numeric").format(col)
            value = sql.SQL("CASE WHEN jsonb_typeof({c}) = 'number' AND {within} THEN {n}::float8 END").format(
                c=col, within=within(number, rule, "numeric"), n=number
            )
        standardised.append(
            sql.SQL("({} - {}) / {} AS {}").format(value, _float(model.mean[i]), _float(model.scale[i]), j(f"z{i}"))
        )
    # 3. The squared distance to each centre, summed feature by feature as the flow sums it.
    squared = [
        sql.SQL("{} AS {}").format(
            sql.SQL(" + ").join(
                sql.SQL("(z.{z} - {c}) * (z.{z} - {c})").format(z=j(f"z{i}"), c=_float(model.centers[label, i]))
                for i in features
            ),
            j(f"d{label}"),
        )
        for label in labels
    ]
    nearest = sql.SQL("least({})").format(
        sql.SQL(", ").join(sql.SQL("d.{}").format(j(f"d{label}")) for label in labels)
    )

    def by_label(values: Sequence[object]) -> sql.Composable:
        # The first label whose distance is the least: the lowest on a tie, as argmin.
        return sql.SQL("CASE {} {} END").format(
            nearest,
            sql.SQL(" ").join(
                sql.SQL("WHEN d.{} THEN {}").format(
                    j(f"d{label}"),
                    values[label] if isinstance(values[label], sql.Composable) else sql.Literal(values[label]),
                )
                for label in labels
            ),
        )

    # The second least squared distance: the least of the other centres', as the scoring pass reads it.
    second = by_label([_least_but(len(model.centers), label) for label in labels])
    outlier = (
        sql.SQL("NULL::boolean")
        if model.outlier_distance is None
        else sql.SQL("sqrt({}) > ({})").format(nearest, by_label(_floats(model.outlier_distance)))
    )

    body = sql.SQL(
        # The outer OFFSET 0 keeps the body one subquery when PostgreSQL inlines it into the
        # caller's query, so it is evaluated per customer as written (flattened, the planner
        # wraps each step in a Memoize node, which costs more than it saves); `a` reads the
        # argument once (inlined, to_jsonb(c) would stand in each use of customer).
        "SELECT * FROM (SELECT {run_id}::bigint, ({segment_id})::integer, ({name})::text, sqrt({nearest}), "
        "sqrt({second}) - sqrt({nearest}), {outlier} "
        "FROM (SELECT customer OFFSET 0) AS a "
        "CROSS JOIN LATERAL (SELECT {extract} OFFSET 0) AS j "
        "CROSS JOIN LATERAL (SELECT {standardised} OFFSET 0) AS z "
        "CROSS JOIN LATERAL (SELECT {squared} OFFSET 0) AS d) AS p OFFSET 0"
    ).format(
        run_id=sql.Literal(int(run_id)),
        segment_id=by_label([int(s) for s in model.segment_ids]),
        name=by_label(list(model.names)),
        nearest=nearest,
        second=second,
        outlier=outlier,
        extract=sql.SQL(", ").join(extract),
        standardised=sql.SQL(", ").join(standardised),
        squared=sql.SQL(", ").join(squared),
    )
    return body.as_string(conn)
