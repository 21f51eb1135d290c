"""Several segmentations side by side: what a segmentation's name may be, and the names of its
BI views, declared once. Pure: no database, no Prefect.

The segmentation `default` is the one there always was: its views keep their names
(segmentation_bi.current_run, current_customer_segments, ...). A segmentation NAME has the same
views under its own name (NAME_run, NAME_customer_segments, ...), rendered from the same files in
sql/bi/ (segmentation.bi_definitions), so there is one definition of each."""

from __future__ import annotations

import re

from segmentation.errors import SegmentationError

DEFAULT = "default"
# The name rule. sql/014_segmentations.sql checks the same pattern (a test holds them together).
NAME_PATTERN = "[a-z][a-z0-9_]{0,39}"
_NAME = re.compile(rf"^{NAME_PATTERN}$")

# The default's BI view, and the suffix of a named segmentation's own: NAME_<suffix>.
VIEWS = {
    "current_run": "run",
    "current_customer_segments": "customer_segments",
    "current_segments": "segments",
    "current_segment_centroids": "segment_centroids",
    "customer_segment_history": "customer_segment_history",
    "customer_segment_spells": "customer_segment_spells",
    "current_segment_profiles": "segment_profiles",
    "current_feature_drift": "feature_drift",
    "segment_history": "segment_history",
    "run_history": "run_history",
    "current_segment_transitions": "segment_transitions",
    "current_segment_changes": "segment_changes",
}
# The views with a row per customer: their customer_id speaks the source's own id, in its own type,
# when the segmentation's ids are keyed by hash (segmentation.bi_definitions.Rendered.sql).
CUSTOMER_VIEWS = (
    "current_customer_segments",
    "customer_segment_history",
    "customer_segment_spells",
    "current_segment_changes",
)
# PostgreSQL cuts identifiers at 63 bytes: the longest view name must fit.
_IDENTIFIER_BYTES = 63
MAX_NAME_LENGTH = _IDENTIFIER_BYTES - 1 - max(len(suffix) for suffix in VIEWS.values())


def check_name(name: object) -> str:
    """The name, or one line saying what is wrong with it and what a good one looks like."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise SegmentationError(
            f"segmentation name {name!r} is not valid: use a lowercase letter, then lowercase letters, digits "
            f"or underscores, at most {MAX_NAME_LENGTH} characters (e.g. rfm or demographics_2026)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise SegmentationError(
            f"segmentation name {name!r} is {len(name)} characters; at most {MAX_NAME_LENGTH}, so that its view "
            f"segmentation_bi.{name}_customer_segment_history fits PostgreSQL's 63-character names"
        )
    if name != DEFAULT and any(view_name(name, v) in VIEWS for v in VIEWS):
        raise SegmentationError(
            f"segmentation name {name!r} would give views the names of the default segmentation's "
            "(segmentation_bi.current_*); choose another"
        )
    return name


def view_name(segmentation: str, default_view: str) -> str:
    """The name, in segmentation_bi, of a segmentation's view that is `default_view` for the default."""
    if segmentation == DEFAULT:
        return default_view
    return f"{segmentation}_{VIEWS[default_view]}"


def view_names(segmentation: str) -> list[str]:
    return [view_name(segmentation, v) for v in VIEWS]
