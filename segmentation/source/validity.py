"""The rules of segmentation.core.rules compiled to SQL for one source: the cheap filter that
keeps a run's valid rows, and the CASE expression that names why a row is quarantined.

Both are built from the same rule objects, check by check, so they agree by construction;
the run still checks that valid plus quarantined rows add up to the snapshot's row count.
Every condition is TRUE or FALSE, never NULL: a column is tested for NULL before it is
compared."""

from __future__ import annotations

from datetime import datetime

from psycopg import sql

from segmentation.core.feature_plan import PlannedFeature
from segmentation.core.rules import (
    ABSURD,
    GENDER_CODES,
    GENDER_EXACT,
    GENDER_TRIMMED,
    TINY,
    Check,
    GenderRule,
    IdRule,
    NumericRule,
    rule_for,
)
from segmentation.source.catalog import INTEGER_TYPES, Column, Source

# Columns the validity SQL adds to a source row.
REASON = "_segmentation_reason"
ID_COUNT = "_segmentation_id_count"
# These cannot hold a value beyond +-ABSURD, so the check is left out for them.
_SMALL_INTEGER_TYPES = {"int2", "int4"}
_MISSING = "NULL"


def _text(value: str) -> sql.Literal:
    return sql.Literal(value)


def _pct(name: str) -> str:
    """A name inside a format() template: its % signs are data, not placeholders."""
    return name.replace("%", "%%")


# A value's place in a message: no identifier can contain NUL, so it cannot clash with a name.
_SLOT = "\0"


def _format(message: str, *values: sql.Composable) -> sql.Composable:
    """format() on the server: the message with the row's values in its _SLOTs."""
    return sql.SQL("format({}, {})").format(_text(_pct(message).replace(_SLOT, "%s")), sql.SQL(", ").join(values))


def _reason_with_value(rule: NumericRule | GenderRule, check: Check, value: sql.Composable) -> sql.Composable:
    """The rule's own message for the check, with the row's value put in."""
    return _format(rule.message(check, _SLOT, missing=_MISSING), value)


def gender_code(col: sql.Composable, otherwise: sql.Composable) -> sql.Composable:
    """The gender code of GenderRule.code in SQL: the exact spellings first, then lower(btrim())."""
    exact = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(_text(spelling), sql.Literal(code)) for spelling, code in GENDER_EXACT.items()
    )
    folded = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(_text(spelling), sql.Literal(code)) for spelling, code in GENDER_CODES.items()
    )
    return sql.SQL("CASE {c} {exact} ELSE CASE lower(btrim({c}, {trimmed})) {folded} ELSE {otherwise} END END").format(
        c=col, exact=exact, trimmed=_text(GENDER_TRIMMED), folded=folded, otherwise=otherwise
    )


def _gender_invalid(col: sql.Composable) -> sql.Composable:
    exact = sql.SQL(", ").join(_text(s) for s in GENDER_EXACT)
    folded = sql.SQL(", ").join(_text(s) for s in GENDER_CODES)
    return sql.SQL("({c} IS NULL OR ({c} NOT IN ({exact}) AND lower(btrim({c}, {trimmed})) NOT IN ({folded})))").format(
        c=col, exact=exact, trimmed=_text(GENDER_TRIMMED), folded=folded
    )


def _bound(typname: str, value: float) -> sql.Literal:
    """A literal of the value's own kind, so the comparison stays in its type (an integer
    compared with a numeric literal would be cast row by row)."""
    return sql.Literal(int(value) if typname in INTEGER_TYPES and float(value).is_integer() else value)


def _numeric_checks(rule: NumericRule, column: Column) -> list[tuple[sql.Composable, sql.Composable]]:
    col = sql.Identifier(rule.column)
    checks: list[tuple[sql.Composable, sql.Composable]] = [
        (sql.SQL("{} IS NULL").format(col), _text(rule.message(Check.MISSING, "", missing=_MISSING)))
    ]
    if column.typname not in INTEGER_TYPES:
        # Compared in the column's own type: a cast to float8 first would fail on a numeric
        # too large for it.
        checks.append(
            (
                sql.SQL("{} IN ('NaN', 'Infinity', '-Infinity')").format(col),
                _reason_with_value(rule, Check.NOT_FINITE, col),
            )
        )
    if column.typname not in _SMALL_INTEGER_TYPES:
        # No abs(): abs() of the smallest bigint overflows.
        checks.append(
            (
                sql.SQL("{c} < {low} OR {c} > {high}").format(
                    c=col, low=_bound(column.typname, -ABSURD), high=_bound(column.typname, ABSURD)
                ),
                _reason_with_value(rule, Check.ABSURD, col),
            )
        )
    if column.typname not in INTEGER_TYPES:
        checks.append((_tiny(col), _reason_with_value(rule, Check.TINY, col)))
    if not rule.bounded:  # a column outside the source contract: no range to be outside of
        return checks
    outside = _reason_with_value(rule, Check.OUTSIDE, col)
    if rule.low is not None:
        checks.append((sql.SQL("{} < {}").format(col, sql.Literal(rule.low)), outside))
    if rule.high is not None:
        checks.append((sql.SQL("{} > {}").format(col, sql.Literal(rule.high)), outside))
    return checks


def _checks(source: Source) -> list[tuple[sql.Composable, sql.Composable]]:
    """(condition, reason) pairs in the rules' order: a row is invalid when any condition
    holds, and the first that holds is its reason."""
    id_rule = IdRule(source.id_column)
    cid = sql.Identifier(source.id_column)
    checks: list[tuple[sql.Composable, sql.Composable]] = [
        (sql.SQL("{} IS NULL").format(cid), _text(id_rule.message(Check.MISSING, "", missing=_MISSING)))
    ]
    if not source.id_unique:
        checks.append(
            (
                sql.SQL("{} > 1").format(sql.Identifier(ID_COUNT)),
                _format(
                    id_rule.message(Check.REPEATED, _SLOT, missing=_MISSING, times=_SLOT), cid, sql.Identifier(ID_COUNT)
                ),
            )
        )
    for feature in source.plan.features:
        checks.extend(_feature_checks(feature, source))
    return [(sql.SQL("({})").format(condition), reason) for condition, reason in checks]


def _missing_check(feature: PlannedFeature) -> list[tuple[sql.Composable, sql.Composable]]:
    """A missing value is a reason only where the feature's missing rule is quarantine."""
    if feature.spec.missing != "quarantine":
        return []
    col = sql.Identifier(feature.column)
    return [
        (
            sql.SQL("{} IS NULL").format(col),
            _text(NumericRule(feature.column).message(Check.MISSING, "", missing=_MISSING)),
        )
    ]


def _infinite(col: sql.Composable) -> sql.Composable:
    return sql.SQL("{} IN ('infinity', '-infinity')").format(col)


def _days_negative(feature: PlannedFeature, col: sql.Composable, as_of: datetime | None) -> sql.Composable:
    from segmentation.source.feature_sql import days_since  # it builds on this module

    if as_of is None:
        raise ValueError("days_since needs the instant days are counted from")
    return sql.SQL("{} < 0").format(days_since(col, as_of))


def _feature_checks(feature: PlannedFeature, source: Source) -> list[tuple[sql.Composable, sql.Composable]]:
    col = sql.Identifier(feature.column)
    if feature.gender_rule:
        shown = sql.SQL("coalesce(quote_literal({}), {})").format(col, _text(_MISSING))
        return [(_gender_invalid(col), _reason_with_value(GenderRule(feature.column), Check.NOT_A_GENDER, shown))]
    kind = feature.spec.kind
    if kind == "category":
        return _missing_check(feature)
    if kind == "days_since":
        checks = _missing_check(feature)
        number_rule = NumericRule(feature.column)
        checks.append((_infinite(col), _reason_with_value(number_rule, Check.NOT_FINITE, col)))
        if feature.spec.transform == "log1p":
            after = _format(
                f"{feature.column} {_SLOT} is after the run's start; log1p takes 0 or more days",
                sql.SQL("{}::text").format(col),
            )
            checks.append((_days_negative(feature, col, source.plan.as_of), after))
        return checks
    rule = _number_rule(feature)
    checks = _missing_check(feature) + _numeric_checks(rule, source.columns[feature.column])[1:]
    if feature.spec.transform == "log1p":
        checks.append((sql.SQL("{} < 0").format(col), _reason_with_value(rule, Check.NEGATIVE, col)))
    return checks


def _number_rule(feature: PlannedFeature) -> NumericRule:
    """The source contract's rule for a column it declares (age, say), else a plain number's."""
    found = rule_for(feature.column)
    return found if isinstance(found, NumericRule) else NumericRule(feature.column)


def _feature_invalid(feature: PlannedFeature, source: Source) -> sql.Composable:
    """The feature's checks as one boolean, TRUE exactly when one of `_feature_checks` holds."""
    col = sql.Identifier(feature.column)
    if feature.gender_rule:
        return _gender_invalid(col)
    kind = feature.spec.kind
    missing_fails = feature.spec.missing == "quarantine"
    if kind == "category":
        return sql.SQL("{} IS NULL").format(col) if missing_fails else sql.SQL("false")
    if kind == "days_since":
        bad = _infinite(col)
        if feature.spec.transform == "log1p":
            bad = sql.SQL("{} OR {}").format(bad, _days_negative(feature, col, source.plan.as_of))
    else:
        rule = _number_rule(feature)
        if feature.spec.transform == "log1p":  # within() then also refuses a negative value
            low = 0.0 if rule.low is None else max(rule.low, 0.0)
            rule = NumericRule(rule.column, low, rule.high, rule.whole)
        bad = sql.SQL("NOT ({})").format(within(col, rule, source.columns[feature.column].typname))
    if missing_fails:
        return sql.SQL("({} IS NULL OR {})").format(col, bad)
    return sql.SQL("({} IS NOT NULL AND ({}))").format(col, bad)


def reason(source: Source) -> sql.Composable:
    """One CASE expression: why a row cannot be segmented, or NULL when it can."""
    cases = [sql.SQL("WHEN {} THEN {}").format(condition, why) for condition, why in _checks(source)]
    return sql.SQL("CASE {} END").format(sql.SQL(" ").join(cases))


def _tiny(value: sql.Composable) -> sql.Composable:
    """Not 0 but closer to 0 than TINY (FALSE for NaN, which compares above every number)."""
    return sql.SQL("({v} <> 0 AND {v} > {low} AND {v} < {high})").format(
        v=value, low=sql.Literal(-TINY), high=sql.Literal(TINY)
    )


def within(value: sql.Composable, rule: NumericRule, typname: str) -> sql.Composable:
    """TRUE exactly when a number passes the rule's checks after the NULL test: one test of its
    accepted interval (NumericRule.accepted), since PostgreSQL orders NaN above every number
    and +-Infinity beyond every finite one, and one of TINY for a type that can hold such a
    value. typname: the value's type (pg_type.typname), so that comparisons stay in it."""
    if typname in _SMALL_INTEGER_TYPES:  # only the contract's own range can fail
        low, high = rule.low, rule.high
    else:
        low, high = rule.accepted()
    tests = []
    if low is not None:
        tests.append(sql.SQL("{} >= {}").format(value, _bound(typname, low)))
    if high is not None:
        tests.append(sql.SQL("{} <= {}").format(value, _bound(typname, high)))
    if typname not in INTEGER_TYPES:
        tests.append(sql.SQL("NOT {}").format(_tiny(value)))
    return sql.SQL(" AND ").join(tests) if tests else sql.SQL("true")


def invalid(source: Source) -> sql.Composable:
    """The same rules as one cheap boolean, TRUE exactly when `reason` is not NULL: each
    numeric feature is tested with `within`. A third of the cost of the CASE, which tests each
    check separately to name it."""
    parts: list[sql.Composable] = [sql.SQL("{} IS NULL").format(sql.Identifier(source.id_column))]
    if not source.id_unique:
        parts.append(sql.SQL("{} > 1").format(sql.Identifier(ID_COUNT)))
    for feature in source.plan.features:
        parts.append(_feature_invalid(feature, source))
    return sql.SQL(" OR ").join(parts)
