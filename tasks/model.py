"""Choosing k and training KMeans on the training set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core import model as core
from segmentation.settings import Settings
from segmentation.source.catalog import Source
from segmentation.tasks.extract import TrainingSet


@dataclass
class TrainedModel:
    scaler: core.Scaler
    centers: np.ndarray  # scaled space
    k: int
    inertia: float
    silhouette: float | None
    candidates: list[core.KCandidate]
    # Per KMeans label, the 99th percentile of its training customers' distances (the outlier
    # threshold, core.outlier_distances); None for a model made without one.
    outlier_distance: np.ndarray | None = None

    @property
    def centers_original(self) -> np.ndarray:
        return self.scaler.inverse(self.centers)


@dataclass
class KChoice:
    k: int
    candidates: list[core.KCandidate]  # empty for a fixed k
    scaler: core.Scaler  # fitted on the training set
    Z: np.ndarray  # the training set scaled, shared with training
    start: np.ndarray | None  # the chosen k's centres on the selection sample (scaled space)


@task(name="choose-k", cache_policy=NO_CACHE)
def choose_k(
    training: TrainingSet,
    source: Source,
    settings: Settings,
    n_clusters: int | None,
    k_min: int,
    k_max: int,
    random_state: int,
    n_init: int,
) -> KChoice:
    low, high = core.check_k(training.n_clustered, n_clusters, k_min, k_max)
    X = training.clustered
    plan = source.plan
    scaler = core.Scaler.fit(X, plan.caps(X), plan.weights())
    Z = scaler.transform(X)
    core.check_not_degenerate(Z, low)
    if n_clusters is not None:
        return KChoice(n_clusters, [], scaler, Z, None)
    k, candidates, start = core.select_k(
        Z,
        low,
        high,
        random_state=random_state,
        n_init=n_init,
        selection_sample_size=settings.k_selection_sample_size,
        silhouette_sample_size=settings.silhouette_sample_size,
    )
    get_run_logger().info(
        "choose-k: %s -> k=%d",
        ", ".join(f"k={c.k} silhouette={c.silhouette:.3f}" for c in candidates if c.silhouette is not None),
        k,
    )
    return KChoice(k, candidates, scaler, Z, start)


@task(name="train", cache_policy=NO_CACHE)
def train(
    settings: Settings,
    choice: KChoice,
    random_state: int,
    n_init: int,
    warm_start: np.ndarray | None = None,
) -> TrainedModel:
    """KMeans on the whole training set, starting from warm_start (the previous run's
    centroids in original units, when k and features are unchanged, so unchanged data gives
    unchanged segments), else from choose-k's centres, else from the best of n_init starts
    on the selection sample."""
    k, scaler, Z = choice.k, choice.scaler, choice.Z
    core.check_not_degenerate(Z, k)
    init = scaler.transform(warm_start) if warm_start is not None else choice.start
    fitted = core.fit_kmeans(Z, k, random_state, n_init, init=init, start_sample_size=settings.k_selection_sample_size)
    score = core.silhouette(Z, fitted.labels_, settings.silhouette_sample_size, random_state)
    # A fixed k: its own figures are the one candidate.
    candidates = choice.candidates or [core.KCandidate(k, float(fitted.inertia_), score)]
    get_run_logger().info(
        "train: k=%d on %d customers%s, inertia %.1f",
        k,
        len(Z),
        " (warm start from the previous run)" if warm_start is not None else "",
        fitted.inertia_,
    )
    # Once per run, on the training set after the fit: how far from its centroid a customer of
    # each segment may be before it counts as an outlier.
    outliers = core.outlier_distances(fitted.cluster_centers_, Z)
    return TrainedModel(scaler, fitted.cluster_centers_, k, float(fitted.inertia_), score, candidates, outliers)
