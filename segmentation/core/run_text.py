"""A run as text for people, from plain data: the run line and the segment table, the same
for the command line (plain text) and the run report's summary artifact (Markdown), and the
k-selection rows of the report's table artifact.

`run` is a row of segmentation.runs as a dict; `segments` one row per segment (columns of
segmentation.segments); `centroids` index segment_id, one column per feature, original units.
Columns the segments table gains later show up without changes here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from segmentation.core import feature_spec
from segmentation.core.input_drift import FeatureDrift
from segmentation.core.rules import GENDER, recognised_genders
from segmentation.errors import SegmentationError

# Columns of segmentation.segments shown with their own formatting (or on purpose not at
# all); any other column with a value is shown as it is: text beside the segment id,
# figures after the centroids.
_KNOWN = {
    "run_id",
    "segment_id",
    "n_customers",
    "share",
    "share_female",
    "share_male",
    "share_unknown_gender",
    "previous_n_customers",  # shown as the change
    "size_change",
    "centroid_shift",
    "description",  # a sentence: under the table (description_lines), not in it
    "n_outliers",  # under the table, as each segment's share of outliers (outlier_line)
    "outlier_distance",  # a threshold in standardised units: for BI, not for reading
}


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _number(value: Any, digits: int = 1) -> str:
    return "n/a" if _missing(value) else f"{value:,.{digits}f}"


def _percent(value: Any) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.1f}%"


def _plain(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return " ".join(str(value).split())
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    return f"{value:.3f}"


def _has_values(segments: pd.DataFrame, column: str) -> bool:
    return column in segments.columns and bool(segments[column].notna().any())


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    left: set[int]  # columns aligned left (text); the rest are figures, aligned right

    def plain(self) -> str:
        widths = [max(len(c) for c in column) for column in zip(self.header, *self.rows, strict=True)]

        def line(cells: Sequence[str]) -> str:
            return " ".join(
                c.ljust(w) if i in self.left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        return "\n".join([line(self.header), *(line(r) for r in self.rows)])

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        return "\n".join([line(self.header), "|" + "---|" * len(self.header), *(line(r) for r in self.rows)])


def segment_table(segments: pd.DataFrame, centroids: pd.DataFrame, features: Sequence[str]) -> Table:
    """One row per segment: id, name, size, share, change since the previous run, share of
    women, each feature's centroid, and how far the centroid moved."""
    extra = [c for c in segments.columns if c not in _KNOWN and _has_values(segments, c)]
    text = [c for c in extra if any(isinstance(v, str) for v in segments[c].dropna())]
    figures = [c for c in extra if c not in text]
    show_change = _has_values(segments, "size_change")
    show_female = _has_values(segments, "share_female")
    show_shift = _has_values(segments, "centroid_shift")
    header = ["segment", *(c.replace("_", " ") for c in text), "customers", "share"]
    header += ["change"] if show_change else []
    header += ["female"] if show_female else []
    header += [f"{f} (share female)" if f == GENDER else f for f in features]
    header += ["centroid shift"] if show_shift else []
    header += [c.replace("_", " ") for c in figures]
    rows = []
    for row in segments.sort_values("segment_id").to_dict("records"):
        segment = int(row["segment_id"])
        cells = [str(segment), *(_plain(row[c]) for c in text), f"{int(row['n_customers']):,}", _percent(row["share"])]
        if show_change:
            cells.append("new" if _missing(row["size_change"]) else f"{int(row['size_change']):+,d}")
        if show_female:
            cells.append(_percent(row["share_female"]))
        for feature in features:
            value = centroids.loc[segment, feature] if segment in centroids.index and feature in centroids else None
            cells.append(value if isinstance(value, str) else _number(value, 2 if feature == GENDER else 1))
        if show_shift:
            cells.append("" if _missing(row["centroid_shift"]) else f"{row['centroid_shift']:.2f}")
        cells += [_plain(row[c]) for c in figures]
        rows.append(cells)
    return Table(header, rows, left={1 + i for i in range(len(text))})


def runs_table(runs: Sequence[dict]) -> Table:
    """One row per run (segmentation.store.readback.recent_runs): the current one marked, and
    whether its assignments are kept, so that it can be made current."""
    header = ["run", "status", "at", "k", "customers", "churn", "current", "can be made current"]
    rows = [
        [
            str(r["run_id"]),
            r["status"] + (" (forced)" if r["forced"] else ""),
            f"{r['at']:%Y-%m-%d %H:%M:%S %Z}" if r["at"] is not None else "",
            "" if r["k"] is None else str(r["k"]),
            "" if r["n_customers"] is None else f"{r['n_customers']:,}",
            _percent(r["churn"]) if r["churn"] is not None else "",
            "current" if r["is_current"] else "",
            ("yes" + (" (--force)" if r["status"] == "rejected" else "")) if r["kept"] and not r["is_current"] else "",
        ]
        for r in runs
    ]
    return Table(header, rows, left={1, 2, 6, 7})


def segments_phrase(run: dict, segments: pd.DataFrame | None = None) -> str:
    """ "4 segments", or with missing-value segments "5 segments (4 clusters, 1 for missing values)"."""
    k = run.get("k")
    if k is None:
        return "n/a segments"
    ruled = (
        0 if segments is None or "missing_feature" not in segments else int(segments["missing_feature"].notna().sum())
    )
    return f"{k + ruled} segments ({k} clusters, {ruled} for missing values)" if ruled else f"{k} segments"


def run_line(run: dict, segments: pd.DataFrame | None = None) -> str:
    """What the run did, in a sentence, and since when, with drift against the previous
    run, a forced publish, an error and (given its segments) a gender column it could not
    read on lines of their own when there are any."""
    when = run.get("published_at") or run.get("finished_at") or run.get("started_at")
    at = f" {when:%Y-%m-%d %H:%M:%S %Z}" if when is not None else ""
    silhouette = _number(run.get("silhouette"), 3)
    lines = [
        f"run {run['run_id']} {run['status']}{at}: {int(run.get('n_customers') or 0)} customers in "
        f"{segments_phrase(run, segments)} from {run['source_table']} "
        f"(features {', '.join(run['features'])}; {int(run.get('n_quarantined') or 0)} quarantined; "
        f"silhouette {silhouette})"
    ]
    if run.get("churn") is not None and run.get("previous_run_id") is not None:
        ari = run.get("adjusted_rand_index")
        lines.append(
            f"since run {run['previous_run_id']}: {run['churn']:.1%} of {run['customers_compared']} customers "
            f"changed segment (adjusted Rand index {_number(ari, 3)}), "
            f"{run['customers_added']} added, {run['customers_removed']} removed"
        )
    issues = "; ".join(run.get("quality_issues") or [])
    decision = run.get("approval")
    approved = decision is not None and decision["decision"] == "approved"
    if decision is not None and approved == (run["status"] == "published"):
        lines.append(_decision_line(decision, issues))  # how the run became what it is
    elif decision is not None and approved and run["status"] == "rejected":
        lines.append(
            f"approved in the Prefect UI ({decision['note'] or 'no note'}) but not published: a newer run was "
            "current, or a run was in progress; the approval's flow run says which"
        )
    elif run.get("forced"):
        how = "force_publish" if (run.get("params") or {}).get("force_publish") else "promote --force"
        lines.append(f"published with {how} despite the quality gate: {issues}")
    if run["status"] == "staged":
        lines.append(
            f"not published: staged, kept but not current; make it current with: "
            f"segmentation promote {run['run_id']} --reason '...'"
        )
    switch = run.get("made_current")
    if switch and switch["action"] != "publish" and switch["still"]:
        # The first run ever made current (a promoted staged run) replaced none.
        replaced = f" from run {switch['from_run_id']}" if switch["from_run_id"] is not None else ""
        lines.append(
            f"current since {switch['switched_at']:%Y-%m-%d %H:%M:%S %Z}, by {switch['action']}{replaced}: "
            f"{switch['reason']}"
        )
    if run.get("error") and run.get("status") != "published":
        lines.append(f"error: {run['error']}")
    if segments is not None and (unread := gender_line(run["source_table"], segments)):
        lines.append(f"warning: {unread}")
    return "\n".join(lines)


def gender_line(source_table: str, segments: pd.DataFrame) -> str | None:
    """The warning for a source whose gender column holds no value the run recognises: its
    segments have share_unknown_gender but no share_female (segmentation.core.segment_stats).
    None otherwise, and for a source with no gender column."""
    if not len(segments) or _has_values(segments, "share_female") or not _has_values(segments, "share_unknown_gender"):
        return None
    return (
        f"no customer's {GENDER} in {source_table} is one the run recognises ({recognised_genders()}, "
        "in any case), so share_female and share_male are NULL; recode the column (or read the source through "
        "a view that does) to report gender shares"
    )


def _decision_line(decision: dict, issues: str) -> str:
    """A person's answer to the approval form, as its own line."""
    note = decision["note"] or "(no note)"
    at = f"{decision['decided_at']:%Y-%m-%d %H:%M:%S %Z}"
    if decision["decision"] == "approved":
        return f"approved in the Prefect UI despite the quality gate ({issues}): {note} (at {at})"
    if decision["decision"] == "rejected":
        return f"rejected in the Prefect UI: {note} (at {at})"
    return f"no answer to the approval form by {at}: the run stays rejected"


def summary_markdown(run: dict, segments: pd.DataFrame, centroids: pd.DataFrame) -> str:
    """The run report's summary: the run line, the figures, and the segment table."""
    features = list(run["features"])
    lines = [f"# Segmentation run {run['run_id']}: {run['status']}", ""]
    lines += [f"{line}  " for line in run_line(run, segments).splitlines()]  # two spaces: a Markdown line break
    lines += [
        "",
        f"- **k**: {run['k'] if run.get('k') is not None else 'n/a'}",
        f"- **customers segmented**: {int(run.get('n_customers') or 0):,}",
        f"- **quarantined**: {int(run.get('n_quarantined') or 0):,} "
        f"(rows in `segmentation.quarantine`, run_id {run['run_id']})",
        f"- **silhouette**: {_number(run.get('silhouette'), 3)}",
        f"- **source**: `{run['source_table']}`, features {', '.join(f'`{f}`' for f in features)}",
    ]
    if line := input_drift_line(run.get("feature_drift") or []):
        lines.append(f"- **input drift** {line}")
    if len(segments):
        table = segment_table(segments, centroids, features).markdown()
        lines += ["", "## Segments", "", f"Centroids in original units.{_back_transformed(run)}", "", table]
        if outliers := outlier_line(segments):
            lines += ["", outliers]
        if described := description_lines(segments):
            lines += ["", "What sets each apart:", "", *(f"- {line}" for line in described)]
    return "\n".join(lines) + "\n"


def _back_transformed(run: dict) -> str:
    """What a log1p feature's centroid is, where the run has one: a reader who knows the segment's
    plain mean sees a lower figure in the table and in "What sets each apart", and is told why."""
    try:
        specs = feature_spec.parse_all((run.get("params") or {}).get("features") or [])
    except (SegmentationError, ValueError):
        return ""
    logged = [f"`{s.column}`" for s in specs if s.transform == "log1p"]
    if not logged:
        return ""
    return (
        f" For {', '.join(logged)} (log1p) the centroid is the mean of ln(1 + x) taken back to the feature's"
        " units: a typical customer of the segment, below the segment's plain mean, which its largest"
        ' values pull up. "What sets each apart" compares it with the same figure for all customers.'
    )


def outlier_line(segments: pd.DataFrame) -> str:
    """Each segment's share of outliers (customers further from its centroid than 99% of its
    training customers, sql/020): "outliers: segment 1 1.0%, segment 2 0.9%"; empty for a run
    without them (made before migration 020)."""
    if not _has_values(segments, "n_outliers"):
        return ""
    parts = [
        f"segment {int(row['segment_id'])} {_percent(int(row['n_outliers']) / max(int(row['n_customers']), 1))}"
        for row in segments.sort_values("segment_id").to_dict("records")
        if not _missing(row["n_outliers"])
    ]
    return f"outliers (further from the centroid than 99% of the segment in training): {', '.join(parts)}"


def description_lines(segments: pd.DataFrame) -> list[str]:
    """One line per segment with a description: "segment 3: Spend about 3.1 times the average (4,906)"."""
    if "description" not in segments.columns:
        return []
    return [
        f"segment {int(row['segment_id'])}: {row['description']}"
        for row in segments.sort_values("segment_id").to_dict("records")
        if isinstance(row.get("description"), str) and row["description"]
    ]


def input_drift_line(drifts: Sequence[dict]) -> str:
    """How each feature moved against the previous run (rows with feature, previous_run_id and
    psi, as segmentation.feature_distributions has them): "vs run 3: monetary PSI 0.412 (large),
    plan 0.004 (stable)"; empty when nothing was compared."""
    compared = [d for d in drifts if d.get("psi") is not None]
    if not compared:
        return ""
    parts = [f"`{d['feature']}` PSI {d['psi']:.3f} ({_verdict(d['psi'])})" for d in compared]
    return f"vs run {compared[0]['previous_run_id']}: {', '.join(parts)}"


def _verdict(value: float) -> str:
    return FeatureDrift("", value).verdict


def k_selection_rows(k_selection: pd.DataFrame, chosen: int | None) -> list[dict]:
    """One row per candidate k for a table artifact; NaN becomes None (JSON null)."""
    records: list[dict[Any, Any]] = k_selection.sort_values("k").to_dict("records")
    return [
        {
            "k": int(row["k"]),
            "inertia": round(float(row["inertia"]), 2),
            "silhouette": None if _missing(row["silhouette"]) else round(float(row["silhouette"]), 4),
            "chosen": int(row["k"]) == chosen,
        }
        for row in records
    ]
