"""Per-segment figures accumulated chunk by chunk, so a run summarises every customer
without holding them all: counts, gender counts, and per feature the mean, standard
deviation (merged with Chan et al.'s parallel formula), minimum and maximum; and the outliers,
customers further from their centroid than the segment's outlier_distance, when counted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from segmentation.core.feature_plan import FeaturePlan
from segmentation.core.features import GENDER_FEMALE, GENDER_MALE, GENDER_UNKNOWN


class SegmentStats:
    def __init__(self, k: int, features: Sequence[str], segment_ids: Sequence[int] | np.ndarray | None = None):
        self.k = k
        self.features = list(features)
        # The id each KMeans label is published under (stable across runs); 1..k by default.
        self.segment_ids = np.asarray(segment_ids if segment_ids is not None else np.arange(1, k + 1), dtype=np.int64)
        f = len(self.features)
        self.count = np.zeros(k, dtype=np.int64)
        self.gender = np.zeros((k, 3), dtype=np.int64)
        self.mean = np.zeros((k, f))
        self.m2 = np.zeros((k, f))
        self.min = np.full((k, f), np.inf)
        self.max = np.full((k, f), -np.inf)
        self.outliers: np.ndarray | None = None  # (k,) counts, once count_outliers is called

    def count_outliers(self, labels: np.ndarray, outlier: np.ndarray) -> None:
        """Add a chunk's outliers: labels (n,), outlier (n,) booleans."""
        counts = np.bincount(labels[outlier], minlength=self.k).astype(np.int64)
        self.outliers = counts if self.outliers is None else self.outliers + counts

    def update(self, labels: np.ndarray, X: np.ndarray, gender: np.ndarray | None = None) -> None:
        """Add a chunk: labels (n,), X (n, features) in original units, gender codes (n,)."""
        k = self.k
        n_b = np.bincount(labels, minlength=k).astype(np.int64)
        if gender is not None:
            for code in (GENDER_MALE, GENDER_FEMALE, GENDER_UNKNOWN):
                self.gender[:, code] += np.bincount(labels[gender == code], minlength=k)
        present = n_b > 0
        safe_n = np.where(present, n_b, 1)[:, None]
        for j in range(X.shape[1]):
            col = X[:, j]
            mean_b = np.bincount(labels, weights=col, minlength=k) / safe_n[:, 0]
            m2_b = np.bincount(labels, weights=np.square(col - mean_b[labels]), minlength=k)
            n_a = self.count
            total = n_a + n_b
            delta = mean_b - self.mean[:, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                new_mean = np.where(present, self.mean[:, j] + delta * n_b / np.maximum(total, 1), self.mean[:, j])
                new_m2 = np.where(
                    present, self.m2[:, j] + m2_b + delta**2 * n_a * n_b / np.maximum(total, 1), self.m2[:, j]
                )
            self.mean[:, j], self.m2[:, j] = new_mean, new_m2
            for s in np.flatnonzero(present):
                values = col[labels == s]
                self.min[s, j] = min(self.min[s, j], values.min())
                self.max[s, j] = max(self.max[s, j], values.max())
        self.count += n_b

    def merge(self, other: SegmentStats) -> None:
        """Add the figures of another part of the same run (a range scored elsewhere), by the
        same parallel formula as a chunk."""
        if other.k != self.k or other.features != self.features or (other.segment_ids != self.segment_ids).any():
            raise ValueError("segment figures of different runs cannot be merged")
        n_a, n_b = self.count[:, None], other.count[:, None]
        total = np.maximum(n_a + n_b, 1)
        delta = other.mean - self.mean
        self.mean = np.where(n_b > 0, self.mean + delta * n_b / total, self.mean)
        self.m2 = np.where(n_b > 0, self.m2 + other.m2 + delta**2 * n_a * n_b / total, self.m2)
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.gender += other.gender
        self.count += other.count
        if other.outliers is not None:
            self.outliers = other.outliers.copy() if self.outliers is None else self.outliers + other.outliers

    @property
    def n_customers(self) -> int:
        return int(self.count.sum())

    @property
    def no_gender_recognised(self) -> bool:
        """There were customers, and not one of them had a gender GENDER_CODES recognises (a
        source that codes gender 1/2, say): 0% women would be a wrong figure, not a finding."""
        return self.n_customers > 0 and not self.gender[:, [GENDER_FEMALE, GENDER_MALE]].any()

    def segments(self, has_gender: bool) -> pd.DataFrame:
        """One row per segment. The gender shares are None when the source has no gender
        column (has_gender False); share_female and share_male are None when it has one
        but no value of it was recognised (share_unknown_gender then says every customer's is
        unknown)."""
        total = max(self.n_customers, 1)
        frame = pd.DataFrame(
            {
                "segment_id": self.segment_ids,
                "n_customers": self.count,
                "share": self.count / total,
            }
        )
        per = np.maximum(self.count, 1)
        for code, column in (
            (GENDER_FEMALE, "share_female"),
            (GENDER_MALE, "share_male"),
            (GENDER_UNKNOWN, "share_unknown_gender"),
        ):
            unread = not has_gender or (code != GENDER_UNKNOWN and self.no_gender_recognised)
            frame[column] = None if unread else self.gender[:, code] / per
        frame["n_outliers"] = None if self.outliers is None else self.outliers
        return frame

    def centroids(self, centers: np.ndarray, plan: FeaturePlan | None = None) -> pd.DataFrame:
        """Long format: one row per segment, feature and (for a category) level, in the
        features' own units. centers: the k KMeans centroids in the model's input units; the
        segments after them are missing-value segments, whose rows are their customers' means
        (none for a feature with missing=segment, which some of them lack). Without a plan the
        inputs are the features."""
        units = centers if plan is None else plan.to_units(centers)
        rows = []
        for s in range(self.k):
            clustered = s < len(centers)
            if not clustered and self.count[s] == 0:
                continue
            for j, name in enumerate(self.features):
                feature, level = name, None
                if plan is not None:
                    inp = plan.inputs[j]
                    feature, level = plan.features[inp.feature].column, inp.level
                    if not clustered and plan.features[inp.feature].segments_missing:
                        continue
                empty = self.count[s] == 0
                centroid = float(units[s, j]) if clustered else float(self.mean[s, j])
                rows.append(
                    {
                        "segment_id": int(self.segment_ids[s]),
                        "feature": feature,
                        "level": level,
                        "centroid": centroid,
                        "mean": centroid if empty else float(self.mean[s, j]),
                        "stddev": 0.0 if self.count[s] < 2 else float(np.sqrt(self.m2[s, j] / (self.count[s] - 1))),
                        "min": centroid if empty else float(self.min[s, j]),
                        "max": centroid if empty else float(self.max[s, j]),
                    }
                )
        return pd.DataFrame(
            rows, columns=["segment_id", "feature", "level", "centroid", "mean", "stddev", "min", "max"]
        )
