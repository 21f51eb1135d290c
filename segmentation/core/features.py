"""What a valid customer looks like, shared by the CSV loader and the flow's validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FEATURES = ("age", "annual_income", "spending_score")
GENDER = "gender"

# Gender travels as a small code; as a feature it is 1.0 for Female and 0.0 for Male, so
# its centroid in original units reads as the segment's share of women.
GENDER_MALE, GENDER_FEMALE, GENDER_UNKNOWN = 0, 1, 2
GENDER_LABELS = {GENDER_MALE: "male", GENDER_FEMALE: "female", GENDER_UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Range:
    low: float | None
    high: float | None

    def describe(self) -> str:
        if self.high is None:
            return f"at least {self.low:g}"
        return f"{self.low:g}-{self.high:g}"


# Ranges of the source contract; features outside it are only checked for being finite.
FEATURE_RANGES = {
    "age": Range(0, 120),
    "annual_income": Range(0, None),
    "spending_score": Range(1, 100),
}


def gender_code(value: object) -> int:
    """Female/Male in any case with surrounding spaces; anything else is unknown."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "female":
            return GENDER_FEMALE
        if text == "male":
            return GENDER_MALE
    return GENDER_UNKNOWN


def gender_codes(values) -> np.ndarray:
    return np.fromiter((gender_code(v) for v in values), dtype=np.int16)
