from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation import runs
from segmentation.core.summary import SegmentStats
from segmentation.source import Source
from tasks.model import TrainedModel
from tasks.run import RunContext


@task(name="publish", cache_policy=NO_CACHE)
def publish(run: RunContext, source: Source, model: TrainedModel, stats: SegmentStats, n_quarantined: int) -> dict:
    run.snapshot.rollback()  # the snapshot is no longer needed; do not hold it through the publish
    segments = stats.segments(source.has_gender)
    centroids = stats.centroids(model.centers_original)
    runs.publish(
        run.conn, run.run_id, k=model.k, n_customers=stats.n_customers, n_quarantined=n_quarantined,
        inertia=model.inertia, silhouette=model.silhouette, segments=segments, centroids=centroids,
        candidates=model.candidates,
    )
    get_run_logger().info("run %d published: %d customers in %d segments", run.run_id, stats.n_customers, model.k)
    return {
        "run_id": run.run_id,
        "k": model.k,
        "n_customers": stats.n_customers,
        "n_quarantined": n_quarantined,
        "silhouette": model.silhouette,
    }
