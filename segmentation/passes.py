"""The work on one part of a run's pass over the source, defined once. A part is every customer
when the flow's process runs the pass (its chunks from the run's snapshot connection, or from
memory; written by the run's own connection), or one range of ids when a Dask worker runs it
(segmentation.store.range_pass: its chunks and writes on the range's own connections, in the
run's exported snapshot). Only where the chunks come from and where they go differ: what is
done with them is here.

- The extract: every valid row is offered to the training sample (segmentation.core.sampling).
- The scoring pass: every valid customer is assigned to its nearest centroid, written with its
  published segment id, distance and margin (to the second-nearest centroid), compared with the previous run's segment on the way
  (when the writer holds a comparison), and counted into the segment figures (with the outliers:
  customers further from their centroid than its outlier_distance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from segmentation.core.comparison import Changes
from segmentation.core.feature_plan import FeaturePlan
from segmentation.core.model import Scaler, assign_with_margin
from segmentation.core.sampling import HashSample
from segmentation.core.segment_stats import SegmentStats
from segmentation.source.stream import Chunk
from segmentation.store.partitions import AssignmentWriter

Progress = Callable[[int], None]  # told how many rows are done after each chunk


@dataclass(frozen=True)
class Centroids:
    """What the scoring pass needs of the model: scaled centroids, the scaler, the published
    segment id of each KMeans label followed by those of the missing-value segments, and the
    feature plan (the segment figures are in the features' own units); and, by label likewise,
    the distance above which a customer is an outlier (0 for a missing-value segment: its
    customers are at distance 0; None: not known, none counted)."""

    centers: np.ndarray
    scaler: Scaler
    segment_ids: np.ndarray  # (k + missing-value segments,)
    plan: FeaturePlan
    outlier_distance: np.ndarray | None = None  # (k + missing-value segments,)

    def stats(self) -> SegmentStats:
        """Empty segment figures for a part of this pass."""
        return SegmentStats(len(self.segment_ids), self.plan.input_names, self.segment_ids)

    def assign(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's segment (a KMeans label, or k + i for the i-th missing-value segment), its
        distance (0 in a missing-value segment: the rule is met exactly) and its margin, the
        distance to the second-nearest centroid less that (NaN, written NULL, in a
        missing-value segment)."""
        labels, distances, margins = assign_with_margin(self.centers, self.scaler.transform(chunk.X))
        if chunk.rule is not None:
            ruled = chunk.rule > 0
            if ruled.any():
                labels = np.where(ruled, len(self.centers) - 1 + chunk.rule.astype(np.int32), labels)
                distances = np.where(ruled, 0.0, distances)
                margins = np.where(ruled, np.nan, margins)
        return labels, distances, margins

    def outliers(self, labels: np.ndarray, distances: np.ndarray) -> np.ndarray | None:
        """Which rows are further from their centroid than its outlier_distance (None: unknown)."""
        if self.outlier_distance is None:
            return None
        return distances > self.outlier_distance[labels]


@dataclass
class ScoredPart:
    """A part of the scoring pass, done: its segment figures, and its customers whose segment
    differs from the previous run's (None: not compared, or the comparison gave up)."""

    stats: SegmentStats
    changes: Changes | None


def sample_part(chunks: Iterable[Chunk], sample: HashSample, progress: Progress | None = None) -> HashSample:
    for chunk in chunks:
        if chunk.rule is None:
            sample.offer(chunk.ids, X=chunk.X, gender=chunk.gender)
        else:
            sample.offer(chunk.ids, X=chunk.X, gender=chunk.gender, rule=chunk.rule)
        if progress is not None:
            progress(sample.seen)
    return sample


def score_part(
    chunks: Iterable[Chunk],
    writer: AssignmentWriter,
    centroids: Centroids,
    stats: SegmentStats,
    progress: Progress | None = None,
) -> ScoredPart:
    for chunk in chunks:
        labels, distances, margins = centroids.assign(chunk)
        stats.update(labels, centroids.plan.to_units(chunk.X), chunk.gender)
        if (outliers := centroids.outliers(labels, distances)) is not None:
            stats.count_outliers(labels, outliers)
        writer.write(chunk.ids, centroids.segment_ids[labels].astype(np.int32), distances, margins)
        if progress is not None:
            progress(writer.rows)
    return ScoredPart(stats, writer.changes())
