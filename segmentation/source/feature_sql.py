"""A run's features in SQL: the one definition of how a value becomes the model's inputs,
written for two kinds of row. The run reads the source's columns (segmentation.source.queries);
`predict` reads a customer given as jsonb (segmentation.store.scoring). Both call `inputs`
with their own `Raw` values, so the transform, the days and the one-hot encoding are the same
expressions in both, evaluated by the same server in float8: they agree to the bit.

Every expression here is NULL-safe: a missing value is NULL, and what becomes of it is the
feature's missing rule (an imputed number, or 0 for a customer in its missing-value segment,
who is not clustered)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg import sql

from segmentation.core.feature_plan import FeaturePlan, PlannedFeature
from segmentation.core.rules import GENDER_UNKNOWN
from segmentation.source.validity import gender_code

SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class Raw:
    """A feature's value in a row, NULL when missing: `value` in a type the feature's kind
    reads (numeric or float8 for a number; the column's date/time type for days_since; text for
    a category and the gender rule)."""

    value: sql.Composable


def _float(value: float) -> sql.Composable:
    """A float8 constant, exactly: its shortest round-trip text, which float8 input reads back
    to the same double."""
    return sql.SQL("{}::float8").format(sql.Literal(repr(float(value))))


def epoch(as_of: datetime) -> sql.Composable:
    """The run's start as seconds since 1970, a float8 constant."""
    instant = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    return _float((instant - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())


def days_since(value: sql.Composable, as_of: datetime) -> sql.Composable:
    """Days from a date or timestamp to the run's start, as float8. date_part('epoch') reads a
    date or a timestamp without time zone as UTC, and a timestamptz as the instant it is, so the
    session's TimeZone does not matter; in float8, not numeric, for speed (the same arithmetic
    on both paths, so they still agree)."""
    return sql.SQL("(({} - date_part('epoch', {})) / {})").format(epoch(as_of), value, _float(SECONDS_PER_DAY))


def number(feature: PlannedFeature, raw: sql.Composable, as_of: datetime | None) -> sql.Composable:
    """A number or days_since feature's value before its missing rule: float8, transformed."""
    if feature.spec.kind == "days_since":
        if as_of is None:
            raise ValueError("days_since needs the instant days are counted from")
        value = days_since(raw, as_of)
    else:
        value = sql.SQL("({})::float8").format(raw)
    if feature.spec.transform == "log1p":
        # PostgreSQL has no log1p; ln(1 + x) is the same function, computed the same way on
        # both paths, which is what matters here.
        value = sql.SQL("ln(1::float8 + {})").format(value)
    return value


def _imputed(feature: PlannedFeature, raw: sql.Composable) -> sql.Composable:
    """The raw value with a missing one replaced by the feature's number (in the feature's raw
    units: days for days_since)."""
    missing = feature.spec.missing
    if isinstance(missing, float) and feature.spec.kind == "number":
        return sql.SQL("coalesce(({})::float8, {})").format(raw, _float(missing))
    return raw


def inputs(plan: FeaturePlan, raws: Sequence[Raw]) -> list[sql.Composable]:
    """One float8 expression per input of the plan, never NULL for a valid row."""
    out: list[sql.Composable] = []
    for feature, raw in zip(plan.features, raws):
        spec = feature.spec
        if feature.gender_rule:
            out.append(sql.SQL("({})::float8").format(gender_code(raw.value, sql.Literal(GENDER_UNKNOWN))))
            continue
        if spec.kind == "category":
            level_inputs = [
                sql.SQL("(coalesce({} = {}, false))::int::float8").format(raw.value, sql.Literal(level))
                for level in feature.levels
            ]
            if feature.other:
                known = sql.SQL("ARRAY[{}]::text[]").format(
                    sql.SQL(", ").join(sql.Literal(lv) for lv in feature.levels)
                )
                level_inputs.append(
                    sql.SQL("(coalesce({v} <> ALL ({known}), false))::int::float8").format(v=raw.value, known=known)
                )
            out.extend(level_inputs)
            continue
        value = number(feature, _imputed(feature, raw.value), plan.as_of)
        if spec.kind == "days_since" and isinstance(spec.missing, float):
            value = sql.SQL("coalesce({}, {})").format(value, _float(_transformed(feature, spec.missing)))
        if feature.segments_missing:
            value = sql.SQL("coalesce({}, 0::float8)").format(value)
        out.append(value)
    return out


def _transformed(feature: PlannedFeature, days: float) -> float:
    """An imputed number of days, transformed as the feature's values are (in Python: the
    constant is written into the SQL, so both paths use this one double)."""
    return math.log1p(days) if feature.spec.transform == "log1p" else days


def rule(plan: FeaturePlan, raws: Sequence[Raw]) -> sql.Composable:
    """The customer's missing-value segment, as the position (1, 2, ...) of the first feature
    with missing=segment that the row lacks; 0 when it lacks none (the customer is clustered)."""
    cases = [
        sql.SQL("WHEN {} IS NULL THEN {}").format(raw.value, sql.Literal(position))
        for position, (feature, raw) in enumerate(
            ((f, r) for f, r in zip(plan.features, raws) if f.segments_missing), start=1
        )
    ]
    if not cases:
        return sql.SQL("0")
    return sql.SQL("(CASE {} ELSE 0 END)").format(sql.SQL(" ").join(cases))


def source_raws(plan: FeaturePlan, row: str = "c") -> list[Raw]:
    """The features as a source row holds them (a category as text, in the column's own spelling)."""
    raws = []
    for feature in plan.features:
        col = sql.SQL("{}.{}").format(sql.Identifier(row), sql.Identifier(feature.column))
        raws.append(Raw(sql.SQL("{}::text").format(col) if feature.spec.kind == "category" else col))
    return raws
