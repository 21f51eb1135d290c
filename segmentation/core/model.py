"""Scaling, choosing k, training and assigning. Features are standardised before KMeans;
everything reported leaves here in original units."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from segmentation.errors import SegmentationError


@dataclass(frozen=True)
class Scaler:
    """z = (min(x, cap) - mean) / scale, input by input. `scale` is the training standard
    deviation divided by the input's weight, so a weight counts after standardising and the
    arithmetic stays one subtraction and one division (which scoring in SQL repeats exactly).
    `cap`: per input, the value it is capped at (inf: none); None when nothing is capped."""

    mean: np.ndarray
    scale: np.ndarray
    cap: np.ndarray | None = None
    weight: np.ndarray | None = None  # None: every input weighs 1

    @classmethod
    def fit(cls, X: np.ndarray, cap: np.ndarray | None = None, weight: np.ndarray | None = None) -> Scaler:
        if cap is not None:
            X = np.minimum(X, cap)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale == 0] = 1.0  # a constant feature stays constant instead of dividing by 0
        if weight is not None and (weight != 1).any():
            scale = scale / weight
        else:
            weight = None
        return cls(mean, scale, cap, weight)

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = X - self.mean if self.cap is None else np.minimum(X, self.cap) - self.mean
        Z /= self.scale  # in place: one new array of the data's size, not two
        return Z

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        return Z * self.scale + self.mean

    def unweighted(self, Z: np.ndarray) -> np.ndarray:
        """Scaled values in plain standard deviations from the mean, as if every weight were 1."""
        return Z if self.weight is None else Z / self.weight


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
                f"only {n_customers} valid customers for {n_clusters} clusters; load more customers or lower n_clusters"
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


# KMeans runs many short parallel steps; between them the idle OpenMP and OpenBLAS worker
# threads spin on the cores the next step needs. Up to this many rows one thread is faster:
# on 2 cores, n_init=10 fits on 50,000 rows took 0.15 s on one thread and 0.44-0.51 s on two,
# while fits on 1,000,000 rows are a little faster on two.
ONE_THREAD_MAX_ROWS = 200_000


def _threads_for(n_rows: int) -> contextlib.AbstractContextManager:
    return threadpool_limits(limits=1) if n_rows <= ONE_THREAD_MAX_ROWS else contextlib.nullcontext()


def fit_kmeans(
    Z: np.ndarray,
    k: int,
    random_state: int,
    n_init: int,
    init: np.ndarray | None = None,
    start_sample_size: int | None = None,
    *,
    to_fixed_point: bool = True,
) -> KMeans:
    """KMeans on every row of Z. Without init, and when Z has more rows than
    start_sample_size, the n_init k-means++ starts are compared on a reproducible sample of
    that size and only the best is refined on all of Z: the same optimum as n_init fits on
    all rows (benchmarks/e2e.py prints both inertias) at a fraction of the cost.

    to_fixed_point: Lloyd's iterations go on until no row changes cluster (scikit-learn's
    tol=0), not until the centres move less than a tolerance. The result is a fixed point:
    every centre is the mean of its rows and every row is nearest its centre, so a fit that
    starts from these centres (the next night's warm start, on unchanged data) ends where it
    started, row for row. With a tolerance it stops a few iterations short, and the warm
    start then moves some rows (19 of 50,000 in a test with scikit-learn alone)."""
    if init is None and start_sample_size is not None and len(Z) > start_sample_size:
        init = start_centers(Z, k, random_state, n_init, start_sample_size)
    tol = 0.0 if to_fixed_point else 1e-4  # 1e-4: scikit-learn's default
    if init is not None:
        model = KMeans(n_clusters=k, init=init, n_init=1, random_state=random_state, tol=tol)
    else:
        model = KMeans(n_clusters=k, n_init=n_init, random_state=random_state, tol=tol)
    with _threads_for(len(Z)):
        return model.fit(Z)


def start_centers(Z: np.ndarray, k: int, random_state: int, n_init: int, sample_size: int) -> np.ndarray:
    """The best of n_init KMeans fits on a reproducible sample of Z (all of Z when it fits)."""
    idx = subsample(len(Z), sample_size, random_state)
    sample = Z if idx is None else Z[idx]
    with _threads_for(len(sample)):
        return KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(sample).cluster_centers_


def silhouette(Z: np.ndarray, labels: np.ndarray, sample_size: int, random_state: int) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    idx = subsample(len(Z), sample_size, random_state)
    if idx is not None:
        Z, labels = Z[idx], labels[idx]
        if len(np.unique(labels)) < 2:
            return None
    return silhouette_score(Z, labels)


def silhouette_score(Z: np.ndarray, labels: np.ndarray, block_rows: int = 256) -> float:
    """The mean silhouette, as sklearn.metrics.silhouette_score computes it (a customer
    alone in its segment scores 0), but several times faster: each block of rows' distances
    to all rows are summed per segment with one matrix product."""
    Z = np.asarray(Z, dtype=np.float64)
    _, segment = np.unique(labels, return_inverse=True)
    n, k = len(Z), int(segment.max()) + 1
    sizes = np.bincount(segment, minlength=k).astype(np.float64)
    members = np.zeros((n, k))
    members[np.arange(n), segment] = 1.0
    sums = np.empty((n, k))  # sums[i, j]: total distance from customer i to segment j
    for start in range(0, n, block_rows):
        sums[start : start + block_rows] = cdist(Z[start : start + block_rows], Z) @ members
    rows = np.arange(n)
    own_size = sizes[segment]
    a = sums[rows, segment] / np.maximum(own_size - 1, 1)  # own distance is 0, so not counted
    mean_to = sums / sizes
    mean_to[rows, segment] = np.inf
    b = mean_to.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (b - a) / np.maximum(a, b)
    s[own_size == 1] = 0.0
    return float(np.nan_to_num(s).mean())


def select_k(
    Z: np.ndarray,
    k_min: int,
    k_max: int,
    *,
    random_state: int,
    n_init: int,
    selection_sample_size: int,
    silhouette_sample_size: int,
) -> tuple[int, list[KCandidate], np.ndarray]:
    """Try every k in the range on a bounded sample; the best silhouette wins (ties: smaller k).
    Also returns the winner's centres on that sample: start_centers(Z, k, ...) for the same
    sample size, so training can start from them instead of fitting the sample again."""
    idx = subsample(len(Z), selection_sample_size, random_state)
    sample = Z if idx is None else Z[idx]
    candidates, centers = [], {}
    for k in range(k_min, k_max + 1):
        # Only for comparing k and seeding the training fit, which goes on to the fixed point.
        model = fit_kmeans(sample, k, random_state, n_init, to_fixed_point=False)
        score = silhouette(sample, model.labels_, silhouette_sample_size, random_state)
        candidates.append(KCandidate(k, float(model.inertia_), score))
        centers[k] = model.cluster_centers_
    scored = [c for c in candidates if c.silhouette is not None]
    if not scored:
        raise SegmentationError("no k in the range gives at least two distinct segments; set n_clusters")
    best = max(scored, key=lambda c: (c.silhouette, -c.k))
    return best.k, candidates, centers[best.k]


def _squared_distances(centers: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """(k, n): each row's squared distance to each centre, summed feature by feature."""
    # Element-wise arithmetic on whole feature columns: every row's result is independent
    # of the others, so scoring in chunks gives bit-for-bit the same result as scoring in
    # one piece; and columns are 2.6 times faster than summing along short rows.
    columns = [np.ascontiguousarray(Z[:, f]) for f in range(Z.shape[1])]
    d2 = np.zeros((len(centers), len(Z)))
    term = np.empty(len(Z))
    for j, centre in enumerate(centers):
        for f, column in enumerate(columns):
            np.subtract(column, centre[f], out=term)
            np.square(term, out=term)
            d2[j] += term
    return d2


def assign(centers: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and the distance to it, for scaled rows."""
    d2 = _squared_distances(centers, Z)
    labels = d2.argmin(axis=0)
    return labels.astype(np.int32), np.sqrt(d2[labels, np.arange(len(Z))])


def assign_with_margin(centers: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest centre, the distance to it, and the margin: the distance to the second-nearest
    centre minus that distance (0 on a tie), from the same squared distances, with no second
    pass: the nearest's entry is set to infinity in place and the least of the rest read.
    sqrt(second) - sqrt(nearest), in that order, as scoring in SQL computes it."""
    d2 = _squared_distances(centers, Z)
    labels = d2.argmin(axis=0)
    rows = np.arange(len(Z))
    distances = np.sqrt(d2[labels, rows])
    d2[labels, rows] = np.inf
    margins = np.sqrt(d2.min(axis=0)) if len(centers) > 1 else np.full(len(Z), np.inf)
    margins -= distances
    return labels.astype(np.int32), distances, margins


OUTLIER_QUANTILE = 0.99


def outlier_distances(centers: np.ndarray, Z: np.ndarray, quantile: float = OUTLIER_QUANTILE) -> np.ndarray:
    """Per centre, the `quantile` of the distances of the rows of Z nearest to it (numpy's
    linear interpolation), the distances as the scoring pass computes them: a customer scored
    further than that from its centre is an outlier. NaN for a centre no row of Z is nearest."""
    labels, distances = assign(centers, Z)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(centers) + 1))
    ranked = distances[order]
    return np.array(
        [
            np.quantile(ranked[start:stop], quantile) if stop > start else np.nan
            for start, stop in itertools.pairwise(bounds)
        ]
    )
