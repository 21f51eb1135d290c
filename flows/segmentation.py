"""The nightly customer-segmentation flow: orchestration only, a straight line from one value
to the next; the work is in tasks/. Whatever happens, the run ends as one Outcome, and
segmentation.tasks.conclude turns it into its consequences."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State

from segmentation import logs, process
from segmentation.core.feature_spec import FeatureSpec, feature_columns, stored_features
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.core.segments import QualityGate
from segmentation.errors import describe, lost_connection
from segmentation.segmentations import DEFAULT
from segmentation.tasks.conclude import conclude
from segmentation.tasks.dask import Cluster
from segmentation.tasks.extract import check_source, extract, quarantine_invalid
from segmentation.tasks.model import choose_k, train
from segmentation.tasks.publish import keep_run
from segmentation.tasks.run import fail_run, prepare_database, start_run
from segmentation.tasks.score import record_customer_ids, score
from segmentation.tasks.stability import (
    load_previous,
    match_segments,
    measure_drift,
    measure_input_drift,
    quality_gate,
    warm_start,
)

FLOW_NAME = "customer-segmentation"


@flow(name=FLOW_NAME, validate_parameters=True)
def customer_segmentation(
    n_clusters: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    features: list[str | FeatureSpec] = list(DEFAULT_FEATURES),  # noqa: B006 - never mutated; Prefect shows it in the UI form
    source_table: str = "public.customers",
    id_column: str = "customer_id",
    random_state: int = 42,
    n_init: int = 10,
    match_threshold: float = 1.0,
    min_silhouette: float = 0.2,
    min_segment_share: float = 0.01,
    max_customer_drop: float = 0.5,
    max_quarantined_share: float = 0.1,
    max_feature_drift: float | None = None,
    force_publish: bool = False,
    publish: bool = True,
    approval_timeout_minutes: float = 0,
    segmentation: str = DEFAULT,
) -> dict[str, Any] | State:
    """Retrain KMeans on the source table and publish segments for BI.

    Args:
        n_clusters: Number of segments. Leave empty to choose k automatically by silhouette over k_min..k_max.
        k_min: Smallest k tried when choosing k automatically.
        k_max: Largest k tried when choosing k automatically.
        features: The features, each a column name (a numeric column, or gender as Female/Male or F/M) or a feature spec: an object with a column and its kind (number, category, days_since), transform (log1p), clip, missing (quarantine, segment or a number), missing_segment, weight, label, low/high words and max_levels; or a string in the compact form column:option:name=value, e.g. monetary:log1p:clip=0.99. In this form each item is JSON: a name in quotes ("monetary"), or an object such as {"column": "plan", "kind": "category", "weight": 0.5}.
        source_table: Source table, optionally schema-qualified (schema.table).
        id_column: Column that identifies a customer: an integer, text, varchar, char or uuid column; the BI views give it back in its own type.
        random_state: Seed for sampling and KMeans; the same seed on the same data gives the same segments.
        n_init: KMeans starts compared per fit (on the k-selection sample when the training set is larger); the best is kept and refined on the whole training set. Unused when warm-starting from the previous run.
        match_threshold: A new centroid further than this from every previous one (in standard deviations of the features) gets a new segment id instead of inheriting one.
        min_silhouette: Quality gate: reject the run when its silhouette is below this.
        min_segment_share: Quality gate: reject the run when any segment holds a smaller share of customers.
        max_customer_drop: Quality gate: reject the run when valid customers fell by more than this share since the previous published run (a broken upstream load).
        max_quarantined_share: Quality gate: reject the run when more than this share of rows was quarantined.
        max_feature_drift: Quality gate: reject the run when a feature's inputs moved by more than this population stability index against the previous published run (0.25: a large shift). Empty: not checked.
        force_publish: Publish even when the quality gate fails; the run records that it was forced.
        publish: Make the run current when it passes the quality gate. False: the run does everything else and ends staged, kept but not current, to be made current later (segmentation promote RUN_ID).
        approval_timeout_minutes: When the quality gate fails, ask a person to approve or reject the run in the Prefect UI, and wait this long for the answer: an approve-run flow run waits with a form under the gate's reasons and the run's summary. 0: reject at once.
        segmentation: Which segmentation this run belongs to: each has its own current run, history, run lock and BI views. default publishes to segmentation_bi.current_*; another name (a lowercase letter, then lowercase letters, digits or underscores) to segmentation_bi.NAME_run, NAME_customer_segments, NAME_segments, NAME_segment_centroids, NAME_customer_segment_history, NAME_customer_segment_spells, NAME_segment_profiles, NAME_feature_drift, NAME_segment_history, NAME_run_history, NAME_segment_transitions and NAME_segment_changes, created when it first runs.
    """
    # The parameters as called, recorded with the run: first, before any other local exists.
    params = {**locals(), "features": stored_features(features)}
    logs.install()
    process.prepare_for_run()
    gate = QualityGate(min_silhouette, min_segment_share, max_customer_drop, max_quarantined_share, max_feature_drift)
    run = None
    try:
        settings = prepare_database()
        run = start_run(
            settings, source_table, feature_columns(features), {**params, **settings.in_force()}, segmentation
        )
        source = check_source(run, source_table, id_column, list(features))
        with Cluster(settings) as cluster:  # Dask, when set: started by the first pass that needs it
            training = extract(run, source, random_state, cluster)
            n_quarantined = quarantine_invalid(run, source, training)
            previous = load_previous(run, source)
            inputs = measure_input_drift(run, source, training, previous)
            choice = choose_k(training, source, settings, n_clusters, k_min, k_max, random_state, n_init)
            model = train(settings, choice, random_state, n_init, warm_start(previous, source, choice.k))
            identity = match_segments(run, source, model, previous, match_threshold)
            scored = score(run, source, training, identity.centroids, previous, cluster)
            record_customer_ids(run, source, scored.changes, previous)
        drift = measure_drift(run, source, previous, scored.changes)
        issues = quality_gate(source, scored.stats, model, previous, n_quarantined, gate, inputs)
        outcome = keep_run(
            run,
            source,
            model,
            scored.stats,
            identity,
            previous,
            drift,
            inputs,
            n_quarantined,
            issues,
            force_publish,
            publish,
        )
    except Exception as exc:  # noqa: BLE001 - every failure ends the run the same way: recorded, one line
        # The task that raised has logged the details; the reason alone is the outcome's.
        outcome = fail_run(run, describe(exc), source_table, segmentation, lost_connection(exc))
    except BaseException as exc:  # cancelled or interrupted: record it, let Prefect handle the rest
        if run is not None:
            run.fail(describe(exc))
            run.close()
        raise
    try:
        return conclude(outcome, run, approval_timeout_minutes)
    finally:
        if run is not None:
            run.close()  # conclude lets it go first thing after retention; this is for an error before that
