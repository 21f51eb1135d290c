"""Reading and checking a Mall-Customers-shaped CSV file, before anything touches the database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segmentation.core.features import FEATURE_RANGES
from segmentation.errors import SegmentationError

COLUMNS = ("customer_id", "gender", "age", "annual_income", "spending_score")

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
_INTEGER = re.compile(r"^[+-]?\d+$")


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
        raise SegmentationError(f"cannot read {path}: {exc.strerror or exc}; pass the path of a readable CSV file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SegmentationError(f"{path} is not a readable CSV file: {' '.join(str(exc).split())}") from None
    renamed = {}
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


def validate(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Typed valid rows, and one problem per invalid row (all its reasons), by line number."""
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    values = {c: frame[c].str.strip() for c in COLUMNS}

    def check_number(column: str, integer: bool) -> pd.Series:
        text = values[column]
        number = pd.to_numeric(text.where(text != ""), errors="coerce")
        for i in np.flatnonzero((text == "").to_numpy()):
            reasons[i].append(f"{column} is missing")
        bad = (text != "") & (number.isna() | ~np.isfinite(number.fillna(0)))
        if integer:
            bad |= (text != "") & ~text.str.match(_INTEGER)
        for i in np.flatnonzero(bad.to_numpy()):
            reasons[i].append(f"{column} {text.iloc[i]!r} is not {'a whole number' if integer else 'a number'}")
        return number.where(~bad)

    customer_id = check_number("customer_id", integer=True)
    # Ids are parsed exactly: through float64 a large id would round onto another customer's.
    exact = values["customer_id"].map(lambda t: int(t) if _INTEGER.match(t or "") else None)
    too_big = exact.map(lambda v: isinstance(v, int) and not (-(2**63) <= v < 2**63))
    for i in np.flatnonzero(too_big.to_numpy()):
        reasons[i].append(f"customer_id {values['customer_id'].iloc[i]} is outside the bigint range")
    customer_id = exact.where(~too_big & customer_id.notna())
    age = check_number("age", integer=True)
    income = check_number("annual_income", integer=False)
    score = check_number("spending_score", integer=True)
    for column, number in (("age", age), ("annual_income", income), ("spending_score", score)):
        bounds = FEATURE_RANGES[column]
        outside = number.notna() & (
            (number < bounds.low) | ((number > bounds.high) if bounds.high is not None else False)
        )
        for i in np.flatnonzero(outside.to_numpy()):
            reasons[i].append(f"{column} {values[column].iloc[i]} is outside {bounds.describe()}")
    for i in np.flatnonzero((values["gender"] == "").to_numpy()):
        reasons[i].append("gender is missing")

    lines = np.arange(len(frame)) + 2
    known = customer_id.notna()
    duplicated = known & customer_id.duplicated(keep=False)
    if duplicated.any():
        first_line = {}
        for i in np.flatnonzero(duplicated.to_numpy()):
            cid = int(customer_id.iloc[i])
            first_line.setdefault(cid, []).append(int(lines[i]))
        for i in np.flatnonzero(duplicated.to_numpy()):
            cid = int(customer_id.iloc[i])
            others = [str(n) for n in first_line[cid] if n != lines[i]]
            reasons[i].append(f"customer_id {cid} is repeated (also on line {', '.join(others)})")

    problems = [Problem(int(lines[i]), "; ".join(r)) for i, r in enumerate(reasons) if r]
    ok = np.array([not r for r in reasons], dtype=bool)
    valid = pd.DataFrame(
        {
            "customer_id": customer_id[ok].astype("int64"),  # exact Python ints, all in range
            "gender": values["gender"][ok],
            "age": age[ok].astype("int64"),
            "annual_income": income[ok].astype("float64"),
            "spending_score": score[ok].astype("int64"),
        }
    )
    return valid.reset_index(drop=True), problems
