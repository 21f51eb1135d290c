"""What a run clusters on: one FeatureSpec per feature, the one declaration of its options.

The flow's `features` parameter takes, per feature, either a string or an object with the
fields below (the Prefect UI builds its form from this model). A string is a column name,
optionally followed by options in the compact form (`monetary:log1p:clip=0.99`, see
`parse`); a bare name keeps its original meaning: a numeric column, or `gender` coded
Female/Male. The CLI takes the same strings, or a JSON list of objects.

A spec says how a column becomes numbers for KMeans (kind and transform), what to do with a
customer who has no value (missing), how much the feature counts (weight, applied after
standardising) and how a person reads it (label, and words for its low and high ends). It
has no database and no Prefect in it: segmentation.core.feature_plan turns specs and what the
source holds into the model's inputs, segmentation.source.feature_sql into SQL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segmentation.errors import SegmentationError

Kind = Literal["number", "category", "days_since"]
Transform = Literal["none", "log1p"]
Policy = Literal["quarantine", "segment"]

DEFAULT_MAX_LEVELS = 10
_BOOLEAN_OPTIONS = {
    "number": "kind",
    "category": "kind",
    "days_since": "kind",
    "log1p": "transform",
    "none": "transform",
}
_VALUE_OPTIONS = {
    "kind",
    "transform",
    "clip",
    "missing",
    "missing_segment",
    "weight",
    "label",
    "low",
    "high",
    "max_levels",
}


class FeatureSpec(BaseModel):
    """One feature of a run: a column of the source and how it is clustered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(description="The source column.")
    kind: Kind = Field(
        "number",
        description="number; category (text, boolean, enum or integer codes: one-hot of the most frequent levels); "
        "days_since (a date or timestamp: days before the run's start).",
    )
    transform: Transform = Field("none", description="log1p for non-negative heavy-tailed amounts and counts.")
    clip: float | None = Field(
        None, description="Cap values above this quantile of the training values (e.g. 0.99).", gt=0, le=1
    )
    missing: Policy | float = Field(
        "quarantine",
        description="A customer without a value: quarantine; segment (all such customers go to one segment of "
        "their own); or a number to use instead.",
    )
    missing_segment: str | None = Field(
        None, description='The name of the missing-value segment (default "No <label>").'
    )
    weight: float = Field(1.0, description="How much the feature counts, applied after standardising.", gt=0)
    label: str | None = Field(None, description="How people call the feature (default: the column name in words).")
    low: str | None = Field(
        None,
        description='A word for the low end, e.g. "Recent" for recency. days_since: "Recent <label>" by default.',
    )
    high: str | None = Field(
        None,
        description='A word for the high end, e.g. "Lapsed" for recency. days_since: "Old <label>" by default.',
    )
    max_levels: int = Field(
        DEFAULT_MAX_LEVELS, description="category: the most frequent levels kept; the rest are other.", ge=1, le=100
    )

    @field_validator("missing", mode="before")
    @classmethod
    def _missing(cls, value: object) -> object:
        if isinstance(value, str) and value not in ("quarantine", "segment"):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"missing must be quarantine, segment or a number (got {value!r})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if not self.column:
            raise ValueError("a feature needs a column")
        if isinstance(self.missing, float) and not math.isfinite(self.missing):
            raise ValueError(f"{self.column}: missing must be a finite number")
        if self.kind == "category":
            if self.transform != "none" or self.clip is not None:
                raise ValueError(f"{self.column}: a category takes no transform or clip")
            if isinstance(self.missing, float):
                raise ValueError(f"{self.column}: a category's missing is quarantine or segment")
        if self.transform == "log1p" and isinstance(self.missing, float) and self.missing < 0:
            raise ValueError(f"{self.column}: log1p takes 0 or more, so missing cannot be {self.missing:g}")
        if self.missing_segment is not None and self.missing != "segment":
            raise ValueError(f"{self.column}: missing_segment names the segment of missing=segment")
        return self

    @property
    def plain(self) -> bool:
        """Only a column name: today's meaning (a number as it is, or the gender rule)."""
        return self == FeatureSpec.model_validate({"column": self.column})

    @property
    def words(self) -> str:
        """How a person reads the feature."""
        if self.label:
            return self.label
        return _WORDS.get(self.column, self.column.replace("_", " "))

    @property
    def low_end(self) -> str | None:
        """The words for the feature's low end in names and descriptions: the spec's own, else, for
        days since a date, "Recent <label>" (few days since: a recent date; "Low signup date"
        would read as an early one)."""
        if self.low is not None or self.kind != "days_since":
            return self.low
        return f"Recent {self.words}"

    @property
    def high_end(self) -> str | None:
        """As low_end, for the high end: "Old <label>" for days since a date."""
        if self.high is not None or self.kind != "days_since":
            return self.high
        return f"Old {self.words}"

    @property
    def segment_name(self) -> str:
        return self.missing_segment or f"No {self.words}"

    def compact(self) -> str:
        """The compact string form (see `parse`): the column, then each option that is not a default."""
        parts = [self.column]
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name == "column" or value == field.default:
                continue
            if name in ("kind", "transform"):
                parts.append(str(value))
            else:
                parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        return ":".join(parts)

    def stored(self) -> str | dict:
        """As recorded with the run: a bare name stays a string, anything else its non-default fields."""
        return self.column if self.plain else self.model_dump(exclude_defaults=True)


_WORDS = {"annual_income": "income", "spending_score": "spending", "age": "age"}


def parse(item: str | dict | FeatureSpec) -> FeatureSpec:
    """One feature: a FeatureSpec, its fields as a dict, or a string `column[:option...]` where
    an option is a kind (number, category, days_since), a transform (log1p, none), or
    name=value for the other fields (clip=0.99, missing=segment, missing=0, weight=2,
    label=..., low=..., high=..., missing_segment=..., max_levels=5)."""
    if isinstance(item, FeatureSpec):
        return item
    if isinstance(item, str):
        return _from_compact(item)
    if isinstance(item, dict):
        return _validated(item, json.dumps(item))
    raise SegmentationError(f"a feature is a column name or an object with a column, not {item!r}")


def parse_all(items: Iterable[str | dict | FeatureSpec]) -> tuple[FeatureSpec, ...]:
    specs = tuple(parse(item) for item in items)
    if not specs:
        raise SegmentationError("no features given; pass at least one column name, e.g. annual_income,spending_score")
    columns = [s.column for s in specs]
    if len(set(columns)) != len(columns):
        raise SegmentationError(f"features lists a column twice: {', '.join(columns)}; give each column once")
    return specs


def feature_columns(items: Iterable[str | dict | FeatureSpec]) -> list[str]:
    """The columns the items name, read leniently (a run records them before it checks its
    features, so that a bad spec fails a run that is on record)."""
    columns = []
    for item in items:
        if isinstance(item, FeatureSpec):
            columns.append(item.column)
        elif isinstance(item, dict):
            columns.append(str(item.get("column", "")))
        else:
            columns.append(str(item).split(":", 1)[0].strip())
    return columns


def stored_features(items: Iterable[str | dict | FeatureSpec]) -> list[str | dict]:
    """The features as a run's parameters record them: JSON, as given."""
    return [item.stored() if isinstance(item, FeatureSpec) else item for item in items]


def from_text(text: str) -> list[str | dict]:
    """The CLI's --features: a JSON list (of strings and objects), or comma-separated compact strings."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise SegmentationError(f"--features is not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(items, list) or not all(isinstance(i, (str, dict)) for i in items):
            raise SegmentationError("--features as JSON is a list of column names and feature objects")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def _from_compact(text: str) -> FeatureSpec:
    column, *options = (part.strip() for part in text.split(":"))
    fields: dict[str, object] = {"column": column}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            if option not in _BOOLEAN_OPTIONS:
                raise SegmentationError(
                    f"feature {text!r}: unknown option {option!r}; use number, category, days_since, log1p, "
                    "or name=value (clip, missing, missing_segment, weight, label, low, high, max_levels)"
                )
            fields[_BOOLEAN_OPTIONS[option]] = option
        elif name not in _VALUE_OPTIONS:
            raise SegmentationError(
                f"feature {text!r}: unknown option {name!r}; the options are {', '.join(sorted(_VALUE_OPTIONS))}"
            )
        else:
            fields[name] = value
    return _validated(fields, repr(text))


def _validated(fields: dict, shown: str) -> FeatureSpec:
    try:
        return FeatureSpec.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise SegmentationError(f"feature {shown}: {where + ': ' if where else ''}{message}") from None
