"""A run's features as the model reads them: each FeatureSpec, resolved against the source
(its column's type, a category's levels, the instant days are counted from), becomes one or
more inputs, the columns of the matrix KMeans works on.

- number and days_since: one input, the value after its transform (log1p) and missing rule
  (an imputed number), in the feature's transformed units;
- category: one input per level kept (1.0 when the customer's value is that level, else 0.0),
  plus one for every other level when the source had more than max_levels.

The values themselves are computed in SQL, from the source in the run and from a jsonb row in
`predict` (segmentation.source.feature_sql): one expression for both, so they agree. What is
done in Python (the cap of `clip`, standardising and the weight) is exact arithmetic that
segmentation.store.scoring writes out in the same order. Reports convert inputs back to the
feature's own units here (`to_units`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.rules import GENDER

OTHER_LEVEL = "(other)"  # how the level of every customer outside the levels kept is shown


@dataclass(frozen=True)
class Input:
    """One column of the model's matrix."""

    name: str  # "monetary", "plan=pro", "plan!=levels" (every other level)
    feature: int  # index of its feature in the plan
    level: str | None = None  # a category's level; OTHER_LEVEL for the rest
    other: bool = False


@dataclass(frozen=True)
class PlannedFeature:
    spec: FeatureSpec
    typname: str  # the source column's pg_type.typname
    levels: tuple[str, ...] = ()  # category: the levels kept, most frequent first
    other: bool = False  # category: the source had more levels than max_levels

    @property
    def column(self) -> str:
        return self.spec.column

    @property
    def gender_rule(self) -> bool:
        """A bare `gender` on a text column: Female/Male coded 1/0, as before feature specs."""
        return self.spec.plain and self.spec.column == GENDER and self.typname in TEXT_TYPES

    @property
    def segments_missing(self) -> bool:
        return self.spec.missing == "segment"


TEXT_TYPES = {"text", "varchar", "bpchar", "name", "citext"}


@dataclass(frozen=True)
class FeaturePlan:
    features: tuple[PlannedFeature, ...]
    as_of: datetime | None = None  # days_since counts days before this instant (the run's start)
    inputs: tuple[Input, ...] = field(init=False)

    def __post_init__(self) -> None:
        inputs: list[Input] = []
        for index, feature in enumerate(self.features):
            if feature.spec.kind != "category":
                inputs.append(Input(feature.column, index))
                continue
            inputs.extend(Input(f"{feature.column}={level}", index, level) for level in feature.levels)
            if feature.other:
                inputs.append(Input(f"{feature.column}!=levels", index, OTHER_LEVEL, other=True))
        object.__setattr__(self, "inputs", tuple(inputs))

    @classmethod
    def of_columns(cls, columns: Sequence[str], typname: str = "float8") -> FeaturePlan:
        """Bare column names, each a number (or the gender rule, on a text `gender`)."""
        return cls(tuple(PlannedFeature(FeatureSpec.model_validate({"column": c}), typname) for c in columns))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.column for f in self.features)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def rule_features(self) -> tuple[PlannedFeature, ...]:
        """The features whose missing values make a segment of their own, in order: a customer
        missing several goes to the first one's."""
        return tuple(f for f in self.features if f.segments_missing)

    @property
    def simple(self) -> bool:
        """Every feature is a bare column name: inputs are the columns as they are."""
        return all(f.spec.plain for f in self.features)

    def caps(self, X: np.ndarray) -> np.ndarray | None:
        """Per input, the training quantile its values are capped at (inf: none); None when no
        feature clips. The quantile is a value of X (inverted CDF), so a cap is a data value."""
        if not any(f.spec.clip is not None for f in self.features):
            return None
        caps = np.full(len(self.inputs), np.inf)
        for j, inp in enumerate(self.inputs):
            q = self.features[inp.feature].spec.clip
            if q is not None and len(X):
                caps[j] = float(np.quantile(X[:, j], q, method="inverted_cdf"))
        return caps

    def weights(self) -> np.ndarray:
        return np.array([self.features[i.feature].spec.weight for i in self.inputs], dtype=np.float64)

    def to_units(self, values: np.ndarray) -> np.ndarray:
        """Inputs (rows x inputs, or one row) in the features' own units: log1p undone; a
        category's input is already a share. A copy only when something changes."""
        log = [j for j, i in enumerate(self.inputs) if self.features[i.feature].spec.transform == "log1p"]
        if not log:
            return values
        out = np.array(values, dtype=np.float64, copy=True)
        out[..., log] = np.expm1(out[..., log])
        return out

    def key(self) -> str:
        """What two runs must share for their centroids to be comparable (warm start, stable
        segment ids): the features, their options and a category's levels. Bare column names
        are keyed by the names alone, as runs were before feature specs."""
        if self.simple:
            return json.dumps(list(self.columns))
        return json.dumps(self.describe(), sort_keys=True)

    def describe(self) -> list[dict]:
        """What is stored with the run's model (segmentation.run_models.spec): per feature its
        spec, type and levels, and the instant days are counted from."""
        return [
            {
                "spec": f.spec.model_dump(),
                "typname": f.typname,
                "levels": list(f.levels),
                "other": f.other,
            }
            for f in self.features
        ]

    @classmethod
    def from_description(cls, described: Sequence[dict], as_of: datetime | None) -> FeaturePlan:
        return cls(
            tuple(
                PlannedFeature(FeatureSpec.model_validate(d["spec"]), d["typname"], tuple(d["levels"]), d["other"])
                for d in described
            ),
            as_of,
        )
