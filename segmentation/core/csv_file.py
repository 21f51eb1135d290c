"""Reading and checking a Mall-Customers-shaped CSV file, before anything touches the database.

The checks are the rules of segmentation.core.rules, evaluated value by value, so every row
this loader accepts is one a run on the default features segments; parsing a cell into its
column's type (a whole number, a number) is the file's own concern and comes first. Numbers
are compared exactly (integers and decimals, as PostgreSQL compares integer and numeric
columns), and what is stored is exactly what was checked.

Gender is required as a column, not as a value (the rules' docstring says why): a cell is
stored as given, surrounding spaces trimmed, and an empty cell as NULL, as a missing number
would be. So 'Non-binary' or 'U' is kept and counted as unknown in the gender shares, and a
run that clusters on gender quarantines it with its reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd

from segmentation.core.rules import CONTRACT, GENDER_TRIMMED, ID_COLUMN, Check, GenderRule, IdRule, NumericRule
from segmentation.errors import SegmentationError

COLUMNS = (ID_COLUMN, *CONTRACT)

# Header spellings, compared after lower-casing and folding everything but letters and
# digits to one underscore: "Annual Income (k$)" -> "annual_income_k".
_HEADERS = {
    "customerid": "customer_id",
    "customer_id": "customer_id",
    "genre": "gender",
    "gender": "gender",
    "age": "age",
    "annual_income_k": "annual_income",
    "annual_income": "annual_income",
    "spending_score_1_100": "spending_score",
    "spending_score": "spending_score",
}
_INTEGER = re.compile(r"^[+-]?\d+$", re.ASCII)
# PostgreSQL's numeric input: a decimal number with an optional exponent, or NaN and
# infinity in its spellings (any case).
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", re.ASCII)
_SPECIAL = {
    "nan": "NaN",
    "infinity": "Infinity",
    "+infinity": "Infinity",
    "-infinity": "-Infinity",
    "inf": "Infinity",
    "+inf": "Infinity",
    "-inf": "-Infinity",
}
# What PostgreSQL's number input skips around a number (C's isspace); gender is trimmed as
# its rule trims it (spaces only, as btrim() does).
_NUMBER_WHITESPACE = " \t\n\r\v\f"
_BIGINT = (-(2**63), 2**63 - 1)
_MISSING = "missing"


@dataclass(frozen=True)
class Problem:
    line: int  # line number in the file; the header is line 1
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _header_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def read_csv(path: Path) -> pd.DataFrame:
    """The file as text, columns renamed to the source contract's names."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise SegmentationError(f"{path} does not exist; pass the path of a CSV file") from None
    except OSError as exc:  # a directory, no permission, ...
        raise SegmentationError(
            f"cannot read {path}: {exc.strerror or exc}; pass the path of a readable CSV file"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SegmentationError(f"{path} is not a readable CSV file: {' '.join(str(exc).split())}") from None
    renamed: dict[str, str] = {}
    for name in frame.columns:
        key = _HEADERS.get(_header_key(name))
        if key is None:
            continue
        if key in renamed.values():
            raise SegmentationError(f"{path}: two header columns both mean {key}")
        renamed[name] = key
    missing = [c for c in COLUMNS if c not in renamed.values()]
    if missing:
        raise SegmentationError(
            f"{path}: header {', '.join(frame.columns)} lacks {', '.join(missing)}; expected "
            "CustomerID,Genre,Age,Annual Income (k$),Spending Score (1-100) (Gender for Genre, "
            "or snake_case names, also work)"
        )
    return frame.rename(columns=renamed)[list(COLUMNS)]


def _parse_whole(column: str, text: str) -> tuple[int | None, str | None]:
    if not _INTEGER.match(text):
        return None, f"{column} {text!r} is not a whole number"
    return int(text), None


def _parse_number(column: str, text: str) -> tuple[Decimal | None, str | None]:
    if _DECIMAL.match(text) or text.lower() in _SPECIAL:
        value = Decimal(_SPECIAL.get(text.lower(), text))
        # Beyond what PostgreSQL's numeric input reads (16383 digits after the point).
        if not (value.is_finite() and value.as_tuple().exponent < -16383):  # type: ignore[operator]
            return value, None
    return None, f"{column} {text!r} is not a number"


def _check_numeric(rule: NumericRule, text: str) -> tuple[int | Decimal | None, str | None]:
    """The typed value of a cell, or why it is not valid."""
    if text == "":
        return None, rule.message(Check.MISSING, "", missing=_MISSING)
    value, problem = _parse_whole(rule.column, text) if rule.whole else _parse_number(rule.column, text)
    if value is None:
        return None, problem
    failed = rule.failure(value)
    if failed is not None:
        shown = str(value) if failed is Check.NOT_FINITE else text
        return None, rule.message(failed, shown, missing=_MISSING)
    # 0E-20000 is 0, but numeric input cannot take its exponent: store the plain 0.
    return (value if value != 0 else type(value)(0)), None


def _check_id(rule: IdRule, text: str) -> tuple[int | None, str | None]:
    if text == "":
        return None, rule.message(Check.MISSING, "", missing=_MISSING)
    value, problem = _parse_whole(rule.column, text)
    if value is not None and not _BIGINT[0] <= value <= _BIGINT[1]:
        return None, f"{rule.column} {text} is outside the bigint range"
    return value, problem


def validate(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Typed valid rows, and one problem per invalid row (all its reasons), by line number."""
    texts = {
        c: frame[c]
        .str.strip(GENDER_TRIMMED if isinstance(CONTRACT.get(c), GenderRule) else _NUMBER_WHITESPACE)
        .tolist()
        for c in COLUMNS
    }
    id_rule = IdRule()
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    typed: dict[str, list] = {c: [] for c in COLUMNS}  # the values to store; None where invalid or NULL
    for i in range(len(frame)):
        customer_id, problem = _check_id(id_rule, texts[ID_COLUMN][i])
        typed[ID_COLUMN].append(customer_id)
        found = [problem]
        for column, rule in CONTRACT.items():
            text = texts[column][i]
            if isinstance(rule, GenderRule):  # any text, or none
                problem = None
                typed[column].append(text if text != "" else None)
            else:
                number, problem = _check_numeric(rule, text)
                typed[column].append(number)
            found.append(problem)
        reasons[i] = [p for p in found if p]

    lines = [i + 2 for i in range(len(frame))]  # the header is line 1
    by_id: dict[int, list[int]] = {}
    for i, customer_id in enumerate(typed[ID_COLUMN]):
        if customer_id is not None:
            by_id.setdefault(customer_id, []).append(lines[i])
    for i, customer_id in enumerate(typed[ID_COLUMN]):
        if customer_id is not None and len(by_id[customer_id]) > 1:
            others = ", ".join(str(n) for n in by_id[customer_id] if n != lines[i])
            reasons[i].append(id_rule.message(Check.REPEATED, str(customer_id), missing=_MISSING, lines=others))

    problems = [Problem(lines[i], "; ".join(r)) for i, r in enumerate(reasons) if r]
    ok = [not r for r in reasons]
    valid = pd.DataFrame(
        {
            # Exact Python ints, all in range: through float64 a large id would round onto another's.
            ID_COLUMN: pd.array([v for v, keep in zip(typed[ID_COLUMN], ok, strict=True) if keep], dtype="int64"),
            **{
                column: pd.Series(
                    [v for v, keep in zip(typed[column], ok, strict=True) if keep],
                    dtype="int64" if isinstance(rule, NumericRule) and rule.whole else object,
                )
                for column, rule in CONTRACT.items()
            },
        }
    )
    return valid, problems
