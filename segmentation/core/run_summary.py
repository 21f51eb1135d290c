"""The run report's text: a markdown summary and the k-selection rows, from plain data.
Columns the segments table gains later (a segment name, say) show up without changes here."""

from __future__ import annotations

import math

import pandas as pd

# Columns of segmentation.segments shown with their own formatting; any other column is
# shown as it is, after these.
_KNOWN = {"run_id", "segment_id", "n_customers", "share", "share_female", "share_male", "share_unknown_gender"}


def _number(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _is_text(column: pd.Series) -> bool:
    return any(isinstance(v, str) for v in column.dropna())


def _extra_cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _cell(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3f}"


def segments_markdown(segments: pd.DataFrame, centroids: pd.DataFrame, features: list[str]) -> str:
    """segments: one row per segment (columns of segmentation.segments); centroids: index
    segment_id, one column per feature, original units. Other columns with any value are
    shown too: text (a name) beside the segment id, figures after the centroids."""
    extra = [c for c in segments.columns if c not in _KNOWN and segments[c].notna().any()]
    text = [c for c in extra if _is_text(segments[c])]
    figures = [c for c in extra if c not in text]
    show_gender = "share_female" in segments.columns and segments["share_female"].notna().any()
    header = ["segment", *(c.replace("_", " ") for c in text), "customers", "share"]
    if show_gender:
        header.append("female")
    header += [f"{f} (share female)" if f == "gender" else f for f in features]
    header += [c.replace("_", " ") for c in figures]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in segments.sort_values("segment_id").to_dict("records"):
        segment = int(row["segment_id"])
        cells = [str(segment), *(_cell(row[c]) for c in text), f"{int(row['n_customers']):,}", _percent(row["share"])]
        if show_gender:
            cells.append(_percent(row["share_female"]))
        for feature in features:
            value = centroids.loc[segment, feature] if segment in centroids.index and feature in centroids else None
            cells.append(_number(value, 2 if feature == "gender" else 1))
        cells += [_extra_cell(row[c]) for c in figures]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(run: dict, segments: pd.DataFrame, centroids: pd.DataFrame) -> str:
    features = list(run["features"])
    silhouette = _number(run.get("silhouette"), 3)
    when = run.get("published_at") or run.get("finished_at") or run.get("started_at")
    lines = [
        f"# Segmentation run {run['run_id']}: {run['status']}",
        "",
        f"- **k**: {run['k'] if run.get('k') is not None else 'n/a'}",
        f"- **customers segmented**: {int(run['n_customers'] or 0):,}",
        f"- **quarantined**: {int(run['n_quarantined'] or 0):,} (rows in `segmentation.quarantine`, run_id {run['run_id']})",
        f"- **silhouette**: {silhouette}",
        f"- **source**: `{run['source_table']}`, features {', '.join(f'`{f}`' for f in features)}",
    ]
    if when is not None:
        lines.append(f"- **{'published' if run.get('published_at') else 'at'}**: {when:%Y-%m-%d %H:%M:%S %Z}")
    # Figures a run may carry besides the basics (drift against the previous run, a forced
    # publish); shown when the runs table has them.
    if run.get("churn") is not None and run.get("previous_run_id") is not None:
        lines.append(
            f"- **changed segment since run {run['previous_run_id']}**: {_percent(run['churn'])} of the customers in both runs"
        )
    if run.get("forced"):
        issues = "; ".join(run.get("quality_issues") or []) or "see segmentation.runs"
        lines.append(f"- **published despite the quality gate** (force_publish): {_cell(issues)}")
    if run.get("error"):
        lines.append(f"- **error**: {_cell(run['error'])}")
    if len(segments):
        lines += ["", "## Segments", "", "Centroids in original units.", "", segments_markdown(segments, centroids, features)]
    return "\n".join(lines) + "\n"


def k_selection_rows(k_selection: pd.DataFrame, chosen: int | None) -> list[dict]:
    """One row per candidate k for a table artifact; NaN becomes None (JSON null)."""
    rows = []
    for row in k_selection.sort_values("k").itertuples(index=False):
        silhouette = None if row.silhouette is None or math.isnan(row.silhouette) else round(float(row.silhouette), 4)
        rows.append({
            "k": int(row.k),
            "inertia": round(float(row.inertia), 2),
            "silhouette": silhouette,
            "chosen": int(row.k) == chosen,
        })
    return rows
