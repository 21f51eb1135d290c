"""Keeping a run: published, staged or rejected by the quality gate."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation.core import profiles, run_text
from segmentation.core.segment_stats import SegmentStats
from segmentation.outcome import Outcome, Status, gate_verdict
from segmentation.source.catalog import Source
from segmentation.store import history, scoring
from segmentation.store.run import Run
from segmentation.store.runs import Publication
from segmentation.tasks.model import TrainedModel
from segmentation.tasks.stability import InputDrift, SegmentIdentity


def _segments_frame(
    stats: SegmentStats,
    source: Source,
    identity: SegmentIdentity,
    previous: history.PreviousRun | None,
    descriptions: dict[int, str],
) -> pd.DataFrame:
    frame = stats.segments(source.has_gender)
    frame["segment_name"] = identity.names
    before = previous.sizes if previous is not None else {}
    earlier = [before.get(int(s)) for s in frame["segment_id"]]
    frame["previous_n_customers"] = pd.array(earlier, dtype="Int64")
    frame["size_change"] = pd.array(
        [None if p is None else int(n) - p for n, p in zip(frame["n_customers"], earlier)], dtype="Int64"
    )
    frame["centroid_shift"] = [None if np.isnan(s) else float(s) for s in identity.shifts]
    frame["missing_feature"] = [None] * (len(frame) - len(identity.rules)) + list(identity.rules)
    frame["description"] = [descriptions.get(int(s)) for s in frame["segment_id"]]
    thresholds = identity.centroids.outlier_distance
    frame["outlier_distance"] = None if thresholds is None else thresholds
    return frame.astype(object).where(frame.notna(), None)


@task(name="publish", cache_policy=NO_CACHE)
def keep_run(
    run: Run,
    source: Source,
    model: TrainedModel,
    stats: SegmentStats,
    identity: SegmentIdentity,
    previous: history.PreviousRun | None,
    drift: history.Drift | None,
    inputs: InputDrift | None,
    n_quarantined: int,
    quality_issues: list[str],
    force_publish: bool,
    publish_run: bool = True,
) -> Outcome:
    """Keep the run: published (current), staged (kept, not current: publish_run=False), or
    rejected by the quality gate (kept, not current). Returns what became of it."""
    logger = get_run_logger()
    space = profiles.ModelSpace(model.centers_original, model.scaler.unweighted(model.centers), model.scaler.mean)
    profile = profiles.profiles(stats, source.plan, model.k, space)
    missing = dict(zip(map(int, identity.ids[model.k :]), identity.rules))
    descriptions = profiles.describe(profile, source.plan, dict(zip(map(int, identity.ids), identity.names)), missing)
    found = Publication(
        k=model.k,
        n_customers=stats.n_customers,
        n_quarantined=n_quarantined,
        inertia=model.inertia,
        silhouette=model.silhouette,
        segments=_segments_frame(stats, source, identity, previous, descriptions),
        profiles=profile,
        distributions=_distributions_frame(inputs),
        centroids=stats.centroids(model.centers_original, source.plan),
        candidates=model.candidates,
        drift=asdict(drift) if drift is not None else None,
        quality_issues=quality_issues,
        model=scoring.Model(
            features=source.inputs,
            mean=model.scaler.mean,
            scale=model.scaler.scale,
            centers=model.centers,
            segment_ids=identity.ids,
            names=identity.names,
            plan=source.plan,
            cap=model.scaler.cap,
            outlier_distance=identity.centroids.outlier_distance,
        ),
    )
    if unread := run_text.gender_line(str(source.table), found.segments):
        logger.warning(unread)
    compared_with = drift.previous_run_id if drift is not None else None
    if quality_issues and not force_publish:
        stays = "the previous run stays current" if previous is not None else "no run is current yet"
        error = (
            f"{gate_verdict(run.run_id, quality_issues)}. The run is kept as rejected and "
            f"{stays}; if you have checked this run, make it current with: segmentation promote {run.run_id} "
            "--force --reason '...' (or start it again with force_publish=true)"
        )
        run.complete(found, status="rejected", error=error, compared_with=compared_with)
        return _outcome(run, source, found, "rejected", reasons=(error,))
    if not publish_run:
        run.complete(found, status="staged", forced=bool(quality_issues), compared_with=compared_with)
        logger.info(
            "run %d staged, not published: %d customers in %d segments; make it current with: "
            "segmentation promote %d --reason '...'",
            run.run_id,
            stats.n_customers,
            len(identity.ids),
            run.run_id,
        )
        return _outcome(run, source, found, "staged")
    run.complete(found, status="published", forced=bool(quality_issues), compared_with=compared_with)
    if quality_issues:
        logger.warning("run %d published despite the quality gate (force_publish)", run.run_id)
    logger.info("run %d published: %d customers in %d segments", run.run_id, stats.n_customers, len(identity.ids))
    return _outcome(run, source, found, "published")


def _distributions_frame(inputs: InputDrift | None) -> pd.DataFrame | None:
    """segmentation.feature_distributions' rows: each feature's distribution, and its PSI."""
    if inputs is None:
        return None
    psi = inputs.psi()
    return pd.DataFrame(
        [
            {
                "feature": d.feature,
                "units": d.units,
                "edges": None if d.edges is None else list(d.edges),
                "levels": None if d.levels is None else list(d.levels),
                "shares": list(d.shares),
                "previous_run_id": inputs.previous_run_id if d.feature in psi else None,
                "psi": psi.get(d.feature),
            }
            for d in inputs.distributions
        ],
        columns=["feature", "units", "edges", "levels", "shares", "previous_run_id", "psi"],
        dtype=object,  # ids stay ints and a missing one None, not a float NaN
    )


def _outcome(run: Run, source: Source, found: Publication, status: Status, reasons: tuple[str, ...] = ()) -> Outcome:
    return Outcome(
        status=status,
        run_id=run.run_id,
        source_table=str(source.table),
        figures={
            "k": found.k,
            "n_customers": found.n_customers,
            "n_quarantined": found.n_quarantined,
            "inertia": found.inertia,
            "silhouette": found.silhouette,
            "churn": (found.drift or {}).get("churn"),
        },
        quality_issues=tuple(found.quality_issues),
        forced=bool(found.quality_issues) and status != "rejected",
        reasons=reasons,
        segmentation=run.segmentation,
    )
