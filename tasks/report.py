"""The run report in the Prefect UI: a markdown summary, the k-selection table and the
picture, as artifacts of the flow run with stable keys."""

from __future__ import annotations

import base64

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from segmentation import operations
from segmentation.segmentations import DEFAULT

SUMMARY_KEY = "segmentation-summary"
K_SELECTION_KEY = "segmentation-k-selection"
PLOT_KEY = "segmentation-plot"


def artifact_keys(segmentation: str) -> dict[str, str]:
    """The keys of a segmentation's artifacts: as ever for the default; a named segmentation's
    end in its name (artifact keys take dashes, not underscores), so that the newest report of
    each is one key."""
    keys = (SUMMARY_KEY, K_SELECTION_KEY, PLOT_KEY)
    if segmentation == DEFAULT:
        return {key: key for key in keys}
    return {key: f"{key}-{segmentation.replace('_', '-')}" for key in keys}


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@task(name="report", cache_policy=NO_CACHE)
def report(run_id: int) -> list[str]:
    """Reads the run back from the database (segmentation.operations.show), so the report shows
    what BI sees. The run is
    already decided when this runs: a report that cannot be made is a warning, never a
    failed run. Returns the keys of the artifacts made."""
    logger = get_run_logger()
    try:
        found = operations.read_run(run_id, plot=True)
        if found is None:
            logger.warning("report: run %d is not in segmentation.runs", run_id)
            return []
        keys = artifact_keys(found.run.get("segmentation") or DEFAULT)
        made = [keys[SUMMARY_KEY]]
        create_markdown_artifact(
            found.markdown(), key=keys[SUMMARY_KEY], description=f"Segmentation run {run_id}: summary and segments"
        )
        if len(found.k_selection):
            create_table_artifact(
                found.k_selection_rows(),
                key=keys[K_SELECTION_KEY],
                description=f"Segmentation run {run_id}: inertia and silhouette for each k tried",
            )
            made.append(keys[K_SELECTION_KEY])
        if len(found.segments):
            create_image_artifact(
                png_data_url(found.png()),
                key=keys[PLOT_KEY],
                description=f"Segmentation run {run_id}: {len(found.sample)} sampled customers by segment, and choosing k",
            )
            made.append(keys[PLOT_KEY])
        logger.info("report: artifacts %s for run %d", ", ".join(made), run_id)
        return made
    except Exception as exc:  # noqa: BLE001 - the run is decided: a report that fails is a warning
        logger.warning("report: could not report run %d: %s: %s", run_id, type(exc).__name__, exc)
        return []
