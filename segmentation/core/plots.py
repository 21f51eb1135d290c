"""The run picture: customers in the two most separating features, coloured by segment,
with the centroids marked, beside the silhouette/inertia curve over k. Plain data in, PNG
bytes out; no database and no Prefect."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

# Agg before pyplot: the flow runs on servers and in containers without a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

FIGSIZE = (12.0, 4.8)
DPI = 100
# The height of one line of the legend, in inches, at its font size (7 points, with spacing).
LEGEND_LINE = 0.155


@dataclass(frozen=True)
class KCurve:
    k: np.ndarray
    inertia: np.ndarray
    silhouette: np.ndarray  # NaN where not computed
    chosen: int | None


def separation(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per feature, the share of its variance that the segments explain (eta squared):
    1 when the segments split the feature cleanly, 0 when every segment looks alike."""
    X = np.asarray(X, dtype=float)
    labels = np.asarray(labels)
    total = X.var(axis=0) * len(X)
    between = np.zeros(X.shape[1])
    mean = X.mean(axis=0)
    for label in np.unique(labels):
        members = X[labels == label]
        between += len(members) * (members.mean(axis=0) - mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, between / total, 0.0)


def most_separating(X: np.ndarray, labels: np.ndarray, features: list[str], n: int = 2) -> list[int]:
    """Indices of the n features the segments separate best; ties keep the feature order."""
    if len(X) == 0:
        return list(range(min(n, len(features))))
    scores = separation(X, labels)
    order = sorted(range(len(features)), key=lambda i: (-scores[i], i))
    return order[: min(n, len(features))]


def _segment_colours(segment_ids: list[int]) -> dict[int, tuple]:
    cmap = plt.get_cmap("tab10" if len(segment_ids) <= 10 else "tab20")
    return {s: cmap(i % cmap.N) for i, s in enumerate(segment_ids)}


def render(
    X: np.ndarray,
    labels: np.ndarray,
    features: list[str],
    centroids: pd.DataFrame,
    curve: KCurve,
    title: str,
    segment_labels: dict[int, str] | None = None,
    outliers: np.ndarray | None = None,
) -> bytes:
    """PNG of the scatter (X: sampled customers in original units, labels: their segment
    ids; centroids: one row per segment id, one column per feature; segment_labels: the
    legend text per segment id; outliers: per customer, whether it is an outlier, drawn as a
    black-edged diamond; None: not known) and the k curve."""
    X = np.asarray(X, dtype=float).reshape(-1, len(features)) if features else np.empty((len(labels), 0))
    labels = np.asarray(labels)
    # The legend goes under the plots, the full width of the picture: inside the scatter, names
    # and descriptions covered the customers and the axis. The picture grows by its lines.
    named = segment_labels or {}
    entries = {int(s) for s in centroids.index} | {int(s) for s in np.unique(labels)}
    lines = sum((named.get(s) or "").count("\n") + 1 for s in entries) + 1 if features else 0
    below = LEGEND_LINE * lines + (0.15 if lines else 0.0)
    height = FIGSIZE[1] + below
    fig, (ax_scatter, ax_k) = plt.subplots(
        1, 2, figsize=(FIGSIZE[0], height), dpi=DPI, gridspec_kw={"width_ratios": [1.4, 1]}
    )
    try:
        _scatter(ax_scatter, X, labels, features, centroids, named, outliers)
        _k_curve(ax_k, curve)
        fig.suptitle(title)
        # Fixed margins (in inches, as before the legend moved): tight_layout() draws the whole
        # figure once more just to measure it.
        fig.subplots_adjust(left=0.075, right=0.91, bottom=(0.48 + below) / height, top=1 - 0.77 / height, wspace=0.22)
        handles, texts = ax_scatter.get_legend_handles_labels()
        if handles:
            fig.legend(
                handles,
                texts,
                loc="lower left",
                bbox_to_anchor=(0.07, 0.01),
                fontsize=7,
                markerscale=1.5,
                frameon=False,
            )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _scatter(ax, X, labels, features, centroids, segment_labels, outliers=None) -> None:
    if not features:  # only categories: nothing to place customers by
        ax.text(0.5, 0.5, "no numeric feature to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    chosen = most_separating(X, labels, features)
    segment_ids = sorted({int(s) for s in centroids.index} | {int(s) for s in np.unique(labels)})
    colours = _segment_colours(segment_ids)
    x_feature = features[chosen[0]]
    y_of: Callable[[int], float]
    if len(chosen) == 1:
        # One feature: spread the customers out by segment so the groups are still visible.
        xs, ys = X[:, chosen[0]], labels.astype(float)
        y_label, y_of = "segment", float
    else:
        xs, ys = X[:, chosen[0]], X[:, chosen[1]]
        y_feature = features[chosen[1]]
        y_label, y_of = y_feature, lambda segment: float(centroids.loc[segment, y_feature])
    far = np.zeros(len(labels), dtype=bool) if outliers is None else np.asarray(outliers, dtype=bool)
    for segment in segment_ids:
        mask = (labels == segment) & ~far
        label = segment_labels.get(segment) or f"segment {segment}"
        # Markers of a line, not a scatter: Agg stamps one cached marker instead of drawing
        # thousands of paths, which halves the time of the picture.
        ax.plot(xs[mask], ys[mask], "o", markersize=3, alpha=0.5, color=colours[segment], label=label, linestyle="none")
        out = (labels == segment) & far
        if out.any():
            ax.plot(
                xs[out],
                ys[out],
                "D",
                markersize=5,
                color=colours[segment],
                markeredgecolor="black",
                markeredgewidth=0.8,
                linestyle="none",
                zorder=2.5,
            )
        if segment in centroids.index:
            ax.scatter(
                [centroids.loc[segment, x_feature]],
                [y_of(segment)],
                marker="X",
                s=220,
                color=colours[segment],
                edgecolors="black",
                linewidths=1.5,
                zorder=3,
            )
    if far.any():
        # One legend entry for every segment's outliers: black-edged diamonds in its colour.
        ax.plot(
            [],
            [],
            "D",
            markersize=5,
            color="white",
            markeredgecolor="black",
            markeredgewidth=0.8,
            linestyle="none",
            label=f"outliers ({int(far.sum()):,}): further from the centroid than 99% of the segment in training",
        )
    ax.set_xlabel(x_feature)
    ax.set_ylabel(y_label)
    marked = "; diamonds: outliers" if far.any() else ""
    # On two lines: on one, the title ran past the plot's left edge and lost its number.
    ax.set_title(
        f"{len(X):,} customers in the two features that separate the segments best\nX: centroids{marked}", fontsize=10
    )


def _k_curve(ax, curve: KCurve) -> None:
    if len(curve.k) <= 1:
        # k was given, not chosen: one point is no curve, so say what was measured instead.
        if len(curve.k):
            silhouette = "n/a" if np.isnan(curve.silhouette[0]) else f"{curve.silhouette[0]:.3f}"
            text = f"k = {int(curve.k[0])} was fixed, not chosen\n\nsilhouette {silhouette}\ninertia {curve.inertia[0]:,.1f}"
        else:
            text = "no k-selection figures recorded"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title("choosing k")
        return
    ax.plot(curve.k, curve.silhouette, "o-", color="tab:blue", label="silhouette")
    ax.set_xlabel("k (segments)")
    ax.set_ylabel("silhouette (higher is better)", color="tab:blue")
    ax.set_xticks(curve.k)
    inertia_ax = ax.twinx()
    inertia_ax.plot(curve.k, curve.inertia, "s--", color="tab:orange", label="inertia")
    inertia_ax.set_ylabel("inertia (elbow)", color="tab:orange")
    if curve.chosen is not None:
        ax.axvline(curve.chosen, color="grey", linestyle=":", label=f"chosen k={curve.chosen}")
    ax.set_title("choosing k")
    handles = ax.get_legend_handles_labels()[0] + inertia_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="best")
