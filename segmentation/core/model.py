"""Scaling, choosing k, training and assigning. Features are standardised before KMeans;
everything reported leaves here in original units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from segmentation.errors import SegmentationError


@dataclass(frozen=True)
class Scaler:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant feature stays constant instead of dividing by 0
        return cls(mean, scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.scale + self.mean


@dataclass(frozen=True)
class KCandidate:
    k: int
    inertia: float
    silhouette: float | None


def subsample(n: int, size: int, random_state: int) -> np.ndarray | None:
    """Indices of a reproducible random subsample, or None when all n rows fit."""
    if n <= size:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n, size=size, replace=False))


def check_k(n_customers: int, n_clusters: int | None, k_min: int, k_max: int) -> tuple[int, int]:
    """Validate the k parameters against the data; returns the k range to try."""
    if n_clusters is not None:
        if n_clusters < 2:
            raise SegmentationError(f"n_clusters must be at least 2 (got {n_clusters})")
        if n_customers < n_clusters:
            raise SegmentationError(
                f"only {n_customers} valid customers for {n_clusters} clusters; "
                "load more customers or lower n_clusters"
            )
        return n_clusters, n_clusters
    if k_min < 2 or k_max < k_min:
        raise SegmentationError(f"k range {k_min}..{k_max} is invalid; use 2 <= k_min <= k_max")
    # The silhouette needs at least one customer more than clusters.
    if n_customers <= k_min:
        raise SegmentationError(
            f"only {n_customers} valid customers, too few to choose k in {k_min}..{k_max}; "
            f"load at least {k_min + 1} customers or set n_clusters"
        )
    return k_min, min(k_max, n_customers - 1)


def check_not_degenerate(Z: np.ndarray, k: int) -> None:
    distinct = len(np.unique(Z[: 2 * k + 1000], axis=0))
    if distinct < k and len(np.unique(Z, axis=0)) < k:
        if distinct == 1:
            raise SegmentationError(
                f"all {len(Z)} valid customers have identical features; there is nothing to segment "
                "(check the upstream load or choose other features)"
            )
        raise SegmentationError(
            f"only {distinct} distinct customers for {k} clusters; lower n_clusters or choose other features"
        )


def fit_kmeans(Z: np.ndarray, k: int, random_state: int, n_init: int, init: np.ndarray | None = None) -> KMeans:
    if init is not None:
        model = KMeans(n_clusters=k, init=init, n_init=1, random_state=random_state)
    else:
        model = KMeans(n_clusters=k, n_init=n_init, random_state=random_state)
    return model.fit(Z)


def silhouette(Z: np.ndarray, labels: np.ndarray, sample_size: int, random_state: int) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    idx = subsample(len(Z), sample_size, random_state)
    if idx is not None:
        Z, labels = Z[idx], labels[idx]
        if len(np.unique(labels)) < 2:
            return None
    return float(silhouette_score(Z, labels))


def select_k(
    Z: np.ndarray, k_min: int, k_max: int, *, random_state: int, n_init: int,
    selection_sample_size: int, silhouette_sample_size: int,
) -> tuple[int, list[KCandidate]]:
    """Try every k in the range on a bounded sample; the best silhouette wins (ties: smaller k)."""
    idx = subsample(len(Z), selection_sample_size, random_state)
    sample = Z if idx is None else Z[idx]
    candidates = []
    for k in range(k_min, k_max + 1):
        model = fit_kmeans(sample, k, random_state, n_init)
        score = silhouette(sample, model.labels_, silhouette_sample_size, random_state)
        candidates.append(KCandidate(k, float(model.inertia_), score))
    scored = [c for c in candidates if c.silhouette is not None]
    if not scored:
        raise SegmentationError("no k in the range gives at least two distinct segments; set n_clusters")
    best = max(scored, key=lambda c: (c.silhouette, -c.k))
    return best.k, candidates


def assign(centers: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and the distance to it, for scaled rows."""
    # One pass per centre keeps every row's arithmetic independent of the others, so
    # scoring in chunks gives bit-for-bit the same result as scoring in one piece.
    d2 = np.empty((len(Z), len(centers)))
    for j, centre in enumerate(centers):
        d2[:, j] = np.square(Z - centre).sum(axis=1)
    labels = d2.argmin(axis=1)
    return labels.astype(np.int32), np.sqrt(d2[np.arange(len(Z)), labels])
