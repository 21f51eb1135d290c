"""The customer-segmentation flow: orchestration only; the work is in tasks/."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.client.schemas.objects import State
from prefect.states import Failed

from segmentation import logs, process
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.core.segments import QualityGate
from segmentation.errors import RunRejected, describe
from segmentation.tasks.announce import announce
from segmentation.tasks.approval import awaiting_answer, finish_approval, request_approval, run_figures
from segmentation.tasks.dask import Cluster
from segmentation.tasks.extract import check_source, extract, quarantine_invalid
from segmentation.tasks.model import choose_k, train
from segmentation.tasks.publish import keep_run, prune_history
from segmentation.tasks.report import report
from segmentation.tasks.run import fail_run, prepare_database, start_run
from segmentation.tasks.score import score
from segmentation.tasks.stability import load_previous, match_segments, measure_drift, quality_gate, warm_start

FLOW_NAME = "customer-segmentation"


@flow(name=FLOW_NAME, validate_parameters=True)
def customer_segmentation(
    n_clusters: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    features: list[str] = list(DEFAULT_FEATURES),  # noqa: B006 - never mutated; Prefect shows it in the UI form
    source_table: str = "public.customers",
    id_column: str = "customer_id",
    random_state: int = 42,
    n_init: int = 10,
    match_threshold: float = 1.0,
    min_silhouette: float = 0.2,
    min_segment_share: float = 0.01,
    max_customer_drop: float = 0.5,
    max_quarantined_share: float = 0.1,
    force_publish: bool = False,
    publish: bool = True,
    approval_timeout_minutes: float = 0,
) -> dict[str, Any] | State:
    """Retrain KMeans on the source table and publish segments for BI.

    Args:
        n_clusters: Number of segments. Leave empty to choose k automatically by silhouette over k_min..k_max.
        k_min: Smallest k tried when choosing k automatically.
        k_max: Largest k tried when choosing k automatically.
        features: Feature columns of the source table. Numeric columns, plus gender (Female/Male).
        source_table: Source table, optionally schema-qualified (schema.table).
        id_column: Integer column that identifies a customer.
        random_state: Seed for sampling and KMeans; the same seed on the same data gives the same segments.
        n_init: KMeans starts compared per fit (on the k-selection sample when the training set is larger); the best is kept and refined on the whole training set. Unused when warm-starting from the previous run.
        match_threshold: A new centroid further than this from every previous one (in standard deviations of the features) gets a new segment id instead of inheriting one.
        min_silhouette: Quality gate: reject the run when its silhouette is below this.
        min_segment_share: Quality gate: reject the run when any segment holds a smaller share of customers.
        max_customer_drop: Quality gate: reject the run when valid customers fell by more than this share since the previous published run (a broken upstream load).
        max_quarantined_share: Quality gate: reject the run when more than this share of rows was quarantined.
        force_publish: Publish even when the quality gate fails; the run records that it was forced.
        publish: Make the run current when it passes the quality gate. False: the run does everything else and ends staged, kept but not current, to be made current later (segmentation promote RUN_ID).
        approval_timeout_minutes: When the quality gate fails, wait this long for someone to approve or reject the run in the Prefect UI (the run pauses with a form under the gate's reasons and the run's summary). 0: reject at once.
    """
    # The parameters as called, recorded with the run: first, before any other local exists.
    params = {**locals(), "features": list(features)}
    logs.install()
    process.prepare_for_run()
    gate = QualityGate(min_silhouette, min_segment_share, max_customer_drop, max_quarantined_share)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    run = None
    cluster = None
    try:
        settings = prepare_database()
        # Run again by Prefect after a suspension for approval: act on the answer, nothing more.
        if (waiting := awaiting_answer(flow_run_id)) is not None:
            stopped, kept_as = waiting
            published, decision = finish_approval(stopped, kept_as)
            report(stopped)
            result = run_figures(stopped)
            if published:
                announce("published", {**result, "source_table": source_table}, flow_run_id)
                return result
            reason = (result["error"] or f"run {stopped} was rejected by the quality gate") + decision
            announce("rejected", {**result, "source_table": source_table, "error": reason}, flow_run_id)
            return Failed(message=reason)
        run = start_run(
            settings,
            flow_run_id,
            source_table,
            list(features),
            {**params, **settings.in_force()},
        )
        cluster = Cluster(settings)  # Dask, when set: started by the first pass that needs it
        source = check_source(run, source_table, id_column, list(features))
        training = extract(run, source, random_state, cluster)
        n_quarantined = quarantine_invalid(run, source, training)
        previous = load_previous(run, source)
        choice = choose_k(training, settings, n_clusters, k_min, k_max, random_state, n_init)
        model = train(settings, choice, random_state, n_init, warm_start(previous, source, choice.k))
        identity = match_segments(run, source, model, previous, match_threshold)
        stats = score(run, source, training, model, identity.ids, previous, cluster)
        cluster.close()  # the passes over the source are done
        drift = measure_drift(run, source, previous)
        issues = quality_gate(source, stats, model, previous, n_quarantined, gate)
        result = keep_run(
            run, source, model, stats, identity, previous, drift, n_quarantined, issues, force_publish, publish
        )
        report(result["run_id"])
        prune_history(run)
        announce(result["status"], {**result, "source_table": str(source.table)}, flow_run_id)
        return result
    except Exception as exc:  # noqa: BLE001 - every failure ends the run the same way: recorded, one line
        reason = describe(exc)
        if run is not None:
            status = fail_run(run, reason)
            if status in ("published", "staged"):
                # The run was kept before this error (a connection lost after the publish, say):
                # what the database says is the outcome.
                get_run_logger().warning("run %d is %s; the error came after: %s", run.run_id, status, reason)
                kept = {"run_id": run.run_id, "status": status}
                announce(status, {**kept, "source_table": source_table, "error": reason}, flow_run_id)
                return kept
            if isinstance(exc, RunRejected) and approval_timeout_minutes > 0:
                issues = list(exc.figures.get("quality_issues") or [])
                approved, decision = request_approval(run, issues, approval_timeout_minutes)
                if approved:
                    report(run.run_id)
                    prune_history(run)
                    result = {**exc.figures, "status": "published", "forced": True}
                    announce("published", {**result, "source_table": source_table}, flow_run_id)
                    return result
                reason += decision
            if isinstance(exc, RunRejected):  # kept as rejected: report it, and apply retention, as for a published run
                report(run.run_id)
                prune_history(run)
        rejected = isinstance(exc, RunRejected)
        figures = exc.figures if isinstance(exc, RunRejected) else {"run_id": run.run_id if run else None}
        announce(
            "rejected" if rejected else "failed",
            {**figures, "source_table": source_table, "error": reason},
            flow_run_id,
        )
        # The task that raised has logged the details; the reason alone becomes the state message the Prefect UI shows.
        return Failed(message=reason)
    except BaseException as exc:  # cancelled or interrupted: record it, let Prefect handle the rest
        if run is not None:
            fail_run(run, describe(exc))
        raise
    finally:
        if cluster is not None:
            cluster.close()
        if run is not None:
            run.close()
