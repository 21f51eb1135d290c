"""Reading the current (or a given) run back and printing it for people."""

from __future__ import annotations

import pandas as pd
import psycopg


def current_run_id(conn: psycopg.Connection) -> int | None:
    row = conn.execute("SELECT run_id FROM segmentation.current_run").fetchone()
    return None if row is None else row[0]


def format_segments(segments: pd.DataFrame, centroids: pd.DataFrame, features: list[str]) -> str:
    """One row per segment: size, share, change, gender split, and each feature's centroid.
    segments and centroids as segmentation.run_report.RunReport reads them."""
    frame = segments.rename(
        columns={"segment_id": "segment", "segment_name": "name", "n_customers": "customers", "share_female": "female"}
    ).merge(centroids, left_on="segment", right_index=True)
    shown = pd.DataFrame(
        {
            "segment": frame["segment"],
            "name": _left(frame["name"].fillna("")),
            "customers": frame["customers"],
            "share": (frame["share"] * 100).map("{:.1f}%".format),
        }
    )
    if frame["size_change"].notna().any():
        shown["change"] = frame["size_change"].map(lambda v: "new" if pd.isna(v) else f"{int(v):+d}")
    if frame["female"].notna().any():
        shown["female"] = (frame["female"] * 100).map("{:.0f}%".format)
    for feature in features:
        if feature == "gender":
            shown["gender (female share)"] = frame[feature].map("{:.2f}".format)
        else:
            shown[feature] = frame[feature].map("{:.1f}".format)
    return shown.to_string(index=False)


def _left(texts: pd.Series) -> pd.Series:
    width = int(texts.str.len().max() or 0)
    return texts.str.ljust(width)


def describe_run(run: dict) -> str:
    silhouette = "n/a" if run.get("silhouette") is None else f"{run['silhouette']:.3f}"
    text = (
        f"run {run['run_id']} published {run['published_at']:%Y-%m-%d %H:%M:%S %Z}: "
        f"{run['n_customers']} customers in {run['k']} segments from {run['source_table']} "
        f"(features {', '.join(run['features'])}; {run['n_quarantined']} quarantined; silhouette {silhouette})"
    )
    if run.get("churn") is not None:
        text += (
            f"\nsince run {run['previous_run_id']}: {run['churn']:.1%} of {run['customers_compared']} customers "
            f"changed segment (adjusted Rand index {run['adjusted_rand_index']:.3f}), "
            f"{run['customers_added']} added, {run['customers_removed']} removed"
        )
    if run.get("forced"):
        text += f"\npublished with force_publish despite: {'; '.join(run['quality_issues'] or [])}"
    return text
