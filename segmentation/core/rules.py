"""What makes a source row valid: the one declaration of the rules.

Every form of the rules is derived from this module, so they cannot disagree:

- the SQL that selects a run's valid rows and the SQL that names each quarantined row's
  reason (segmentation.source.validity compiles the rules below);
- the CSV loader's checks (segmentation.core.csv_file evaluates them with `failure`);
- gender as a number, wherever it is read as a feature or counted for the gender shares
  (GENDER_CODES, in Python by GenderRule.code and in SQL by validity.gender_code).

A row is invalid for a run, and its reason is the first of these that holds:

1. its id is missing;
2. its id appears more than once (checked in SQL when the id column has no unique index,
   in a CSV file across its lines);
3. per feature, in the order the features are given: a number is missing, NaN or infinite,
   beyond +-ABSURD, not 0 but closer to 0 than TINY, or outside its range in the source
   contract; gender is anything but Female or Male, spelled out or as F/M (in any case,
   with or without surrounding spaces; missing included).

Gender is a rule only where a run clusters on it. The CSV loader checks the id and every
numeric column of the contract (they are the default features, and the contract's column
types), but of gender only that the column is there: a customer whose gender is recorded
another way, or not at all, is still a customer. Such a row is segmented by a run on other
features (and counted as unknown in the gender shares) and quarantined by a run on gender.

tests/test_rules_agree.py drives one matrix of edge values through the CSV loader and the
run's SQL and checks that both accept exactly the same rows.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from decimal import Decimal

# Beyond this no customer attribute is real data, and squaring it would overflow KMeans.
ABSURD = 1e15
# Nor is a value this close to 0 but not 0; and one below float8's range cannot even be read
# as a feature (numeric 1e-400 has no float8).
TINY = 1e-300

ID_COLUMN = "customer_id"
GENDER = "gender"


class Check(enum.Enum):
    MISSING = "missing"
    NOT_FINITE = "not finite"
    ABSURD = "absurd"
    TINY = "tiny"
    OUTSIDE = "outside"
    NOT_A_GENDER = "not a gender"
    NEGATIVE = "negative"  # a feature with transform log1p
    REPEATED = "repeated"


@dataclass(frozen=True)
class NumericRule:
    """A numeric column: present, finite, within +-ABSURD, and within [low, high] (inclusive;
    None is unbounded). `whole`: the source contract stores it as an integer."""

    column: str
    low: float | None = None
    high: float | None = None
    whole: bool = False

    @property
    def bounded(self) -> bool:
        """The source contract declares a range for the column: only then can it be OUTSIDE."""
        return self.low is not None or self.high is not None

    def describe_range(self) -> str:
        if self.low is None and self.high is None:
            return "unbounded"
        if self.high is None:
            return f"at least {self.low:g}"
        if self.low is None:
            return f"at most {self.high:g}"
        return f"{self.low:g}-{self.high:g}"

    def accepted(self) -> tuple[float, float]:
        """The accepted interval, inclusive: the contract's range cut to +-ABSURD."""
        low = -ABSURD if self.low is None else max(self.low, -ABSURD)
        high = ABSURD if self.high is None else min(self.high, ABSURD)
        return low, high

    def failure(self, value: int | float | Decimal | None) -> Check | None:
        """The first check a value fails, or None when it passes. Comparisons are exact for
        int and Decimal, as PostgreSQL's are for integer and numeric columns."""
        if value is None:
            return Check.MISSING
        if _is_nan(value) or _is_infinite(value):
            return Check.NOT_FINITE
        if value < -ABSURD or value > ABSURD:
            return Check.ABSURD
        tiny = Decimal(repr(TINY)) if isinstance(value, Decimal) else TINY  # as SQL reads the literal: exactly
        if value != 0 and -tiny < value < tiny:
            return Check.TINY
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return Check.OUTSIDE
        return None

    def message(self, check: Check, value: str, *, missing: str) -> str:
        """The reason for a failed check. `value` as the row holds it; `missing` is how the
        medium calls an absent value (NULL in SQL, missing in a file)."""
        if check is Check.MISSING:
            return f"{self.column} is {missing}"
        if check is Check.NOT_FINITE:
            return f"{self.column} is {value}"
        if check is Check.ABSURD:
            return f"{self.column} {value} is absurdly large"
        if check is Check.TINY:
            return f"{self.column} {value} is absurdly small (closer to 0 than {TINY:g})"
        if check is Check.OUTSIDE and self.bounded:
            return f"{self.column} {value} is outside {self.describe_range()}"
        if check is Check.NEGATIVE:
            return f"{self.column} {value} is negative; log1p takes 0 or more"
        if check is Check.OUTSIDE:
            raise ValueError(f"{self.column} has no declared range, so no value is outside it")
        raise ValueError(f"{check} is not a check of a numeric column")


# Gender as spelled in the source, after lower-casing and trimming spaces, and its code: the
# one mapping; anything else (NULL included) is GENDER_UNKNOWN.
GENDER_MALE, GENDER_FEMALE, GENDER_UNKNOWN = 0, 1, 2
GENDER_CODES = {"female": GENDER_FEMALE, "f": GENDER_FEMALE, "male": GENDER_MALE, "m": GENDER_MALE}
# The spellings tested first in SQL, as sources write them (Female, F): lower(btrim()) on
# every row costs a tenth of the read.
GENDER_EXACT = {spelling.title(): code for spelling, code in GENDER_CODES.items()}
# PostgreSQL's btrim() trims spaces only, so a tab is part of the value there and here.
GENDER_TRIMMED = " "


def recognised_genders() -> str:
    """The spellings GENDER_CODES recognises, for people: "Female, F, Male or M"."""
    *first, last = GENDER_EXACT
    return f"{', '.join(first)} or {last}"


@dataclass(frozen=True)
class GenderRule:
    """Gender as a feature. Stored, gender is any text or none (see the module's docstring)."""

    column: str = GENDER

    @staticmethod
    def code(value: object) -> int:
        """GENDER_FEMALE, GENDER_MALE, or GENDER_UNKNOWN for anything else."""
        if isinstance(value, str):
            return GENDER_CODES.get(value.strip(GENDER_TRIMMED).lower(), GENDER_UNKNOWN)
        return GENDER_UNKNOWN

    def failure(self, value: str | None) -> Check | None:
        """A missing gender fails the one check too: it is not Female or Male either."""
        return Check.NOT_A_GENDER if self.code(value) == GENDER_UNKNOWN else None

    def message(self, check: Check, value: str | None, *, missing: str) -> str:
        """`value` quoted as a literal. None: a missing cell of a file (SQL shows a NULL as
        NULL in the value's place)."""
        if check is Check.NOT_A_GENDER:
            if value is None:
                return f"{self.column} is {missing}"
            return f"{self.column} {value} is not Female or Male"
        raise ValueError(f"{check} is not a check of the gender column")


@dataclass(frozen=True)
class IdRule:
    column: str = ID_COLUMN

    def message(self, check: Check, value: str, *, missing: str, times: str = "", lines: str = "") -> str:
        """For a repeated id: how many `times` it appears in a table, or on which other
        `lines` of a file."""
        if check is Check.MISSING:
            return f"{self.column} is {missing}"
        if check is Check.REPEATED and lines:
            return f"{self.column} {value} is repeated (also on line {lines})"
        if check is Check.REPEATED:
            return f"{self.column} {value} appears {times} times in the source"
        raise ValueError(f"{check} is not a check of the id column")


Rule = NumericRule | GenderRule

# The source contract (docs/configuration.md, "The source table"): its columns and their rules.
CONTRACT: dict[str, Rule] = {
    GENDER: GenderRule(),
    "age": NumericRule("age", 0, 120, whole=True),
    "annual_income": NumericRule("annual_income", 0, None),
    "spending_score": NumericRule("spending_score", 1, 100, whole=True),
}


def rule_for(feature: str) -> Rule:
    """The rule of a feature column: the contract's, or for any other numeric column only
    present, finite and within +-ABSURD."""
    return CONTRACT.get(feature) or NumericRule(feature)


def _is_nan(value: int | float | Decimal) -> bool:
    return value.is_nan() if isinstance(value, Decimal) else isinstance(value, float) and math.isnan(value)


def _is_infinite(value: int | float | Decimal) -> bool:
    return value.is_infinite() if isinstance(value, Decimal) else isinstance(value, float) and math.isinf(value)
