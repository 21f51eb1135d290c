"""What makes a segment different: its profile against the population, and a sentence that
says it.

A profile has one row per segment and feature (and level, for a category): the segment's value
in the feature's own units (a number's mean; a level's share of the segment), the population's,
and the standardised difference z: for a number, (segment mean - population mean) / population
standard deviation; for a level, the same of its 0/1 indicator, (share - population share) /
sqrt(p (1 - p)). z puts numbers and levels on one scale, so the rows of a segment are ranked by
|z| (1: its most distinguishing trait). A level also has its lift, share / population share.

Everything comes from the scoring pass's segment figures (segmentation.core.segment_stats): no
second scan of the source. The population is every customer the run scored, except that a
feature with missing=segment is profiled over the customers who have it (those in its
missing-value segment lack it, and carry no value for it).

A feature read through log1p is profiled as the model reads it (ModelSpace): for a segment KMeans
found, its value is the centroid taken back to the feature's units (a typical customer of the
segment: the mean of ln(1 + x), undone), the population's is the training mean taken back the
same way, and z is the centroid's distance from it in standard deviations of ln(1 + x), which is
what the segment's name reads. On the raw values, a heavy tail's spread made every segment but the
extremes look average ("close to the average on every feature" for a segment named "Lapsed"), and
its few largest values pulled each mean far above the typical customer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from segmentation.core.feature_plan import OTHER_LEVEL, FeaturePlan, PlannedFeature
from segmentation.core.segment_stats import SegmentStats

# A trait is worth a word in a description only from this far from the population.
NOTABLE_Z = 0.5
TRAITS_IN_A_DESCRIPTION = 3
COLUMNS = ["segment_id", "feature", "level", "value", "population", "z", "share", "lift", "rank"]


@dataclass(frozen=True)
class ModelSpace:
    """The trained model's view of its k centres, for the inputs it reads through log1p."""

    centers: np.ndarray  # k x inputs, in the model's input units (ln(1 + x) for log1p)
    z: np.ndarray  # k x inputs, in standard deviations from the training mean, weights undone
    mean: np.ndarray  # per input, the training mean, in input units


def profiles(stats: SegmentStats, plan: FeaturePlan, k: int, space: ModelSpace | None = None) -> pd.DataFrame:
    """One row per segment and input (COLUMNS). stats: the scoring pass's figures in the
    features' own units, the k clustered segments first, then the missing-value segments;
    space: the model's centres, for the log1p features' rows of the clustered segments (the
    module's docstring), None: every row from stats."""
    rows = []
    n_segments = len(stats.count)
    typical = None if space is None else plan.to_units(space.centers)
    typical_population = None if space is None else plan.to_units(space.mean)
    for j, inp in enumerate(plan.inputs):
        feature = plan.features[inp.feature]
        logged = space is not None and inp.level is None and feature.spec.transform == "log1p"
        # The segments whose customers have this feature: for one with missing=segment, only the
        # clustered ones (a missing-value segment's customers may lack it, its own's all do).
        has_it = np.array([s < k or not feature.segments_missing for s in range(n_segments)])
        n = stats.count[has_it].astype(np.float64)
        total = n.sum()
        if total == 0:
            continue
        mean = float((n * stats.mean[has_it, j]).sum() / total)
        m2 = float((stats.m2[has_it, j] + n * (stats.mean[has_it, j] - mean) ** 2).sum())
        level = inp.level is not None
        spread = math.sqrt(mean * (1 - mean)) if level else math.sqrt(m2 / total)
        for s in np.flatnonzero(has_it & (stats.count > 0)):
            value, population = float(stats.mean[s, j]), mean
            z = (value - mean) / spread if spread > 0 else 0.0
            if logged and s < k:
                assert space is not None and typical is not None and typical_population is not None
                value, population, z = float(typical[s, j]), float(typical_population[j]), float(space.z[s, j])
            rows.append(
                {
                    "segment_id": int(stats.segment_ids[s]),
                    "feature": feature.column,
                    "level": inp.level,
                    "value": value,
                    "population": population,
                    "z": z,
                    "share": value if level else None,
                    "lift": value / mean if level and mean > 0 else None,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    if not len(frame):
        return pd.DataFrame(columns=COLUMNS)
    order = frame.assign(strength=-frame["z"].abs()).sort_values(["segment_id", "strength", "feature", "level"])
    frame.loc[order.index, "rank"] = order.groupby("segment_id").cumcount() + 1
    return frame.astype({"rank": int})


def describe(
    profile: pd.DataFrame, plan: FeaturePlan, names: dict[int, str], missing: dict[int, str] | None = None
) -> dict[int, str]:
    """Per segment, one sentence from its two or three most distinguishing traits, in plain words
    and original units: "Spend about 3.1 times the average; recency 6 days (average 74); mostly
    pro plan (62%, 2.3 times the average)". Distinct within the run: where two would read the
    same, the next trait is added, and at last the segment's name. missing: the missing-value
    segments' features by segment id; what their customers lack comes first."""
    words = {f.column: f.spec.words for f in plan.features}
    lacking = {s: [f"no {words.get(column, column)}"] for s, column in (missing or {}).items()}
    by_feature = {f.column: f for f in plan.features}
    sentences: dict[int, list[str]] = {}
    said_of: dict[int, set[str]] = {}
    for record in profile.sort_values(["segment_id", "rank"]).to_dict("records"):
        segment = int(record["segment_id"])
        traits = sentences.setdefault(segment, list(lacking.get(segment, [])))
        said = said_of.setdefault(segment, set())
        # One trait per feature: a category's most distinguishing level says it.
        if abs(float(record["z"])) >= NOTABLE_Z and record["feature"] not in said:
            traits.append(_trait(record, by_feature[str(record["feature"])]))
            said.add(str(record["feature"]))
    for traits in sentences.values():
        if not traits:
            traits.append("close to the average on every feature")
    for segment_id in names:
        sentences.setdefault(segment_id, lacking.get(segment_id, ["No customers"]))
    chosen = {s: t[:TRAITS_IN_A_DESCRIPTION] for s, t in sentences.items()}
    for _ in range(10):
        seen: dict[str, list[int]] = {}
        for s, traits in chosen.items():
            seen.setdefault("; ".join(traits), []).append(s)
        clashes = [ids for ids in seen.values() if len(ids) > 1]
        if not clashes:
            break
        for ids in clashes:
            for s in ids:
                more = sentences[s][len(chosen[s]) : len(chosen[s]) + 1]
                chosen[s] = chosen[s] + (more or [names.get(s, f"segment {s}")])
    return {s: _sentence(traits) for s, traits in chosen.items()}


def _sentence(traits: list[str]) -> str:
    text = "; ".join(traits)
    return text[:1].upper() + text[1:]


def _trait(record: dict, feature: PlannedFeature) -> str:
    row = SimpleNamespace(**record)
    spec = feature.spec
    words = spec.words
    if isinstance(row.level, str):
        level = "other" if row.level == OTHER_LEVEL else row.level
        lift = f", {row.lift:.1f} times the average" if row.lift == row.lift and row.lift >= 1.5 else ""
        how = "mostly" if row.value >= 0.5 else "often" if row.z > 0 else "no" if row.value == 0 else "rarely"
        return f"{how} {level} {words} ({row.value:.0%}{lift})"
    if feature.gender_rule:
        return f"{row.value:.0%} women (average {row.population:.0%})"
    unit = " days" if spec.kind == "days_since" else ""
    end = spec.low_end if row.z < 0 else spec.high_end
    figure = f"{words} {_number(row.value)}{unit}, average {_number(row.population)}{unit}"
    if row.value > 0 and row.population > 0 and spec.kind == "number":
        ratio = row.value / row.population
        if ratio >= 1.5:
            figure = f"{words} about {ratio:.1f} times the average, {_number(row.value)}{unit}"
    if end:
        return f"{end[:1].lower()}{end[1:]} ({figure})"
    head, _, tail = figure.partition(", ")
    return f"{head} ({tail})"


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}" if abs(x) >= 1 else f"{x:.2g}"
