"""Synthetic mall customers: five income/spending groups shaped like the Kaggle Mall
Customers data, with ages that differ by group, for demos and load tests."""

from __future__ import annotations

import numpy as np

from segmentation.core.features import GENDER_FEMALE, GENDER_MALE

# (share, income mean, income sd, spending mean, spending sd, age mean, age sd)
GROUPS = (
    (0.40, 55, 9, 50, 7, 43, 13),  # average income, average spending
    (0.20, 87, 14, 82, 9, 33, 4),  # high income, high spending
    (0.11, 26, 7, 79, 10, 25, 5),  # low income, high spending
    (0.17, 88, 14, 17, 10, 41, 11),  # high income, low spending
    (0.12, 26, 7, 21, 13, 45, 13),  # low income, low spending
)
FEMALE_SHARE = 0.56


def generate(n: int, seed: int | list[int] = 0, first_id: int = 1) -> dict[str, np.ndarray]:
    """Columns customer_id, gender_code, age, annual_income, spending_score for n customers."""
    rng = np.random.default_rng(seed)
    shares = np.array([g[0] for g in GROUPS])
    group = rng.choice(len(GROUPS), size=n, p=shares / shares.sum())
    params = np.array([g[1:] for g in GROUPS], dtype=float)[group]
    income = np.clip(np.rint(rng.normal(params[:, 0], params[:, 1])), 10, 150)
    spending = np.clip(np.rint(rng.normal(params[:, 2], params[:, 3])), 1, 100)
    age = np.clip(np.rint(rng.normal(params[:, 4], params[:, 5])), 18, 75)
    gender = np.where(rng.random(n) < FEMALE_SHARE, GENDER_FEMALE, GENDER_MALE).astype(np.int16)
    return {
        "customer_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "gender_code": gender,
        "age": age.astype(np.int32),
        "annual_income": income.astype(np.float64),
        "spending_score": spending.astype(np.int32),
    }
