"""The features a run clusters on by default, and gender as a number.

Gender travels as a small code (segmentation.core.rules declares it); as a feature it is 1.0
for Female and 0.0 for Male, so its centroid in original units reads as the segment's share
of women."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from segmentation.core.rules import GENDER, GENDER_FEMALE, GENDER_MALE, GENDER_UNKNOWN, GenderRule

__all__ = ["DEFAULT_FEATURES", "GENDER", "GENDER_FEMALE", "GENDER_MALE", "GENDER_UNKNOWN", "gender_codes"]

DEFAULT_FEATURES = ("age", "annual_income", "spending_score")


def gender_codes(values: Iterable[object]) -> np.ndarray:
    return np.fromiter((GenderRule.code(v) for v in values), dtype=np.int16)
