"""The customer-segmentation flow: orchestration only; the work is in tasks/."""

from __future__ import annotations

from prefect import flow, runtime
from prefect.states import Failed

from segmentation import logs
from segmentation.core.features import DEFAULT_FEATURES
from segmentation.errors import SegmentationError
from tasks.extract import check_source, extract, quarantine_invalid
from tasks.model import choose_k, train
from tasks.publish import publish
from tasks.report import report
from tasks.run import close_run, fail_run, prepare_database, start_run
from tasks.score import score

FLOW_NAME = "customer-segmentation"


@flow(name=FLOW_NAME, validate_parameters=True)
def customer_segmentation(
    n_clusters: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    features: list[str] = list(DEFAULT_FEATURES),
    source_table: str = "public.customers",
    id_column: str = "customer_id",
    random_state: int = 42,
    n_init: int = 10,
) -> dict:
    """Retrain KMeans on the source table and publish segments for BI.

    Args:
        n_clusters: Number of segments. Leave empty to choose k automatically by silhouette over k_min..k_max.
        k_min: Smallest k tried when choosing k automatically.
        k_max: Largest k tried when choosing k automatically.
        features: Feature columns of the source table. Numeric columns, plus gender (Female/Male).
        source_table: Source table, optionally schema-qualified (schema.table).
        id_column: Integer column that identifies a customer.
        random_state: Seed for sampling and KMeans; the same seed on the same data gives the same segments.
        n_init: KMeans restarts per fit; the best is kept.
    """
    logs.install()
    params = {
        "n_clusters": n_clusters, "k_min": k_min, "k_max": k_max, "features": list(features),
        "source_table": source_table, "id_column": id_column, "random_state": random_state, "n_init": n_init,
    }
    run = None
    try:
        settings = prepare_database()
        run = start_run(
            settings, str(runtime.flow_run.id) if runtime.flow_run.id else None, source_table, list(features),
            {**params, **settings.sizes()},
        )
        source = check_source(run, source_table, id_column, list(features))
        n_quarantined = quarantine_invalid(run, source)
        training = extract(run, source, random_state)
        k, candidates = choose_k(training, settings, n_clusters, k_min, k_max, random_state, n_init)
        model = train(training, settings, k, candidates, random_state, n_init)
        stats = score(run, source, training, model)
        result = publish(run, source, model, stats, n_quarantined)
        report(result["run_id"])
        return result
    except Exception as exc:
        reason = failure_reason(exc)
        if run is not None:
            fail_run(run, reason)
        # The task that raised has logged the details; the reason alone becomes the state message the Prefect UI shows.
        return Failed(message=reason)
    except BaseException as exc:  # cancelled or interrupted: record it, let Prefect handle the rest
        if run is not None:
            fail_run(run, failure_reason(exc))
        raise
    finally:
        if run is not None:
            close_run(run)


def failure_reason(exc: BaseException) -> str:
    """One line: a user error's own message, otherwise the exception type and message."""
    text = str(exc) if isinstance(exc, SegmentationError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__
