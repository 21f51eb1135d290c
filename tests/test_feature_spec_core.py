"""Feature specs and plans without a database: the compact and JSON forms, what is refused
(one line each), the model's inputs, caps, units and the names segments get."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.core import feature_spec
from segmentation.core.feature_plan import OTHER_LEVEL, FeaturePlan, PlannedFeature
from segmentation.core.feature_spec import FeatureSpec
from segmentation.core.segments import names_describing, segment_names, stable_names
from segmentation.errors import SegmentationError

pytestmark = pytest.mark.unit


def test_the_compact_form_reads_every_option():
    spec = feature_spec.parse(
        "recency_days:log1p:clip=0.99:missing=segment:missing_segment=Never ordered:weight=2:label=recency:low=Recent:high=Lapsed"
    )
    assert spec == FeatureSpec(
        column="recency_days",
        transform="log1p",
        clip=0.99,
        missing="segment",
        missing_segment="Never ordered",
        weight=2.0,
        label="recency",
        low="Recent",
        high="Lapsed",
    )
    assert feature_spec.parse(spec.compact()) == spec
    assert feature_spec.parse("plan:category:max_levels=3") == FeatureSpec(column="plan", kind="category", max_levels=3)
    assert feature_spec.parse("last_order_at:days_since:missing=400").missing == 400.0
    assert feature_spec.parse("age").plain and not feature_spec.parse("age:log1p").plain


def test_the_cli_takes_commas_or_json():
    assert feature_spec.from_text("monetary:log1p, frequency") == ["monetary:log1p", "frequency"]
    assert feature_spec.from_text('[{"column": "plan", "kind": "category"}, "age"]') == [
        {"column": "plan", "kind": "category"},
        "age",
    ]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "monetary:log2",
            "feature 'monetary:log2': unknown option 'log2'; use number, category, days_since, log1p, or name=value",
        ),
        (
            "monetary:colour=red",
            "feature 'monetary:colour=red': unknown option 'colour'; the options are clip, high, kind",
        ),
        ("monetary:clip=2", "feature 'monetary:clip=2': clip: Input should be less than or equal to 1"),
        (
            "monetary:missing=sometimes",
            "feature 'monetary:missing=sometimes': missing: missing must be quarantine, segment or a number (got 'sometimes')",
        ),
        ("plan:category:log1p", "feature 'plan:category:log1p': plan: a category takes no transform or clip"),
        (
            "plan:category:missing=0",
            "feature 'plan:category:missing=0': plan: a category's missing is quarantine or segment",
        ),
        (
            "monetary:log1p:missing=-1",
            "feature 'monetary:log1p:missing=-1': monetary: log1p takes 0 or more, so missing cannot be -1",
        ),
        (
            "monetary:missing_segment=X",
            "feature 'monetary:missing_segment=X': monetary: missing_segment names the segment of missing=segment",
        ),
        (
            {"column": "monetary", "colour": "red"},
            'feature {"column": "monetary", "colour": "red"}: colour: Extra inputs are not permitted',
        ),
        ("monetary:weight=0", "feature 'monetary:weight=0': weight: Input should be greater than 0"),
    ],
)
def test_a_bad_spec_is_one_line_naming_it(given, message):
    with pytest.raises(SegmentationError) as raised:
        feature_spec.parse(given)
    assert str(raised.value).startswith(message), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_column_twice_is_refused():
    with pytest.raises(
        SegmentationError, match="features lists a column twice: monetary, monetary; give each column once"
    ):
        feature_spec.parse_all(["monetary", "monetary:log1p"])
    with pytest.raises(SegmentationError, match="no features given"):
        feature_spec.parse_all([])


def plan() -> FeaturePlan:
    return FeaturePlan(
        (
            PlannedFeature(FeatureSpec(column="monetary", transform="log1p", clip=0.5), "numeric"),
            PlannedFeature(FeatureSpec(column="plan", kind="category", max_levels=2), "text", ("pro", "free"), True),
            PlannedFeature(
                FeatureSpec(column="recency", missing="segment", low="Recent", high="Lapsed", weight=2), "int4"
            ),
        )
    )


def test_a_plan_has_one_input_per_number_and_per_level_kept():
    p = plan()
    assert p.input_names == ("monetary", "plan=pro", "plan=free", "plan!=levels", "recency")
    assert [i.level for i in p.inputs] == [None, "pro", "free", OTHER_LEVEL, None]
    assert [f.column for f in p.rule_features] == ["recency"]
    assert p.weights().tolist() == [1, 1, 1, 1, 2]
    X = np.array([[0.0, 1, 0, 0, 3], [np.log1p(99), 0, 1, 0, 5], [np.log1p(9), 0, 0, 1, 7]])
    caps = p.caps(X)
    assert caps is not None and caps[0] == np.log1p(9) and np.isinf(caps[1:]).all()
    units = p.to_units(X)
    assert np.allclose(units[:, 0], [0, 99, 9]) and (units[:, 1:] == X[:, 1:]).all()
    assert FeaturePlan.from_description(p.describe(), None) == p
    assert p.key() != FeaturePlan.of_columns(["monetary", "plan", "recency"]).key()


def test_names_use_the_features_own_words_and_levels():
    p = plan()
    # In plain standard deviations: monetary high; recency very low, which reads as "Very recent".
    z = np.array([[1.0, 0.0, 0.0, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    inputs = np.array([[500.0, 0.8, 0.1, 0.1, 2.0], [5.0, 0.1, 0.2, 0.7, 40.0]])
    assert segment_names(p, z, inputs) == [
        "High monetary · Mostly pro plan · Very recent",
        "Average monetary · Mostly other plan · Lapsed",
    ]
    # Bare column names keep their names as before.
    mall = FeaturePlan.of_columns(["annual_income", "spending_score"])
    assert segment_names(mall, np.array([[1.0, -1.0]]), np.array([[90.0, 20.0]])) == ["High income · Low spending"]


def test_days_since_reads_as_a_date_recent_or_old_unless_its_words_are_given():
    # More days since signing up is an older signup: "High signup date" would read as a late one.
    signup = FeaturePlan((PlannedFeature(FeatureSpec(column="signup_date", kind="days_since"), "date"),))
    z, days = np.array([[-1.0], [2.0], [0.1]]), np.array([[30.0], [900.0], [400.0]])
    assert segment_names(signup, z, days) == ["Recent signup date", "Very old signup date", "Average signup date"]
    worded = FeatureSpec(column="last_order_at", kind="days_since", low="Active", high="Lapsed")
    assert (worded.low_end, worded.high_end) == ("Active", "Lapsed")
    assert (FeatureSpec(column="monetary").low_end, FeatureSpec(column="monetary").high_end) == (None, None)


def test_a_segment_keeps_its_name_while_it_still_describes_it():
    mall = FeaturePlan.of_columns(["annual_income", "spending_score", "age"])
    before = {3: "Low income · Average spending · Age 30-44", 4: "High income · High spending · Age under 30 (2)"}
    # Income moved from -0.52 to -0.48 sd, age from 44.5 to 45.5: afresh it would be "Average income
    # · ... · Age 45-59"; within the slack (0.25 sd, 2 years), the name it had stays.
    z = np.array([[-0.48, 0.1, 0.0], [1.0, 1.0, -1.0]])
    inputs = np.array([[50.0, 52.0, 45.5], [90.0, 80.0, 25.0]])
    assert segment_names(mall, z, inputs)[0] == "Average income · Average spending · Age 45-59"
    assert stable_names(mall, z, inputs, [3, 4], before) == [
        "Low income · Average spending · Age 30-44",
        "High income · High spending · Age under 30",  # its suffix was only for that run's uniqueness
    ]
    # Past the slack the segment is named afresh, the whole name: income at -0.2 sd is average.
    z[0, 0] = -0.2
    assert stable_names(mall, z, inputs, [3, 4], before)[0] == "Average income · Average spending · Age 45-59"
    # A new id (no name before) is named afresh.
    assert stable_names(mall, z, inputs, [9, 4], before)[0] == "Average income · Average spending · Age 45-59"
    # Categories: a plan held by 48% of a segment named "Mostly pro plan" keeps it; by 40%, not.
    p = plan()
    cz = np.array([[1.0, 0.0, 0.0, 0.0, -2.0]])
    named = {1: "High monetary · Mostly pro plan · Very recent"}
    assert stable_names(p, cz, np.array([[500.0, 0.48, 0.3, 0.22, 2.0]]), [1], named) == [named[1]]
    assert stable_names(p, cz, np.array([[500.0, 0.40, 0.3, 0.30, 2.0]]), [1], named) == ["High monetary · Very recent"]
    assert "High monetary · Very recent" in names_describing(p, cz[0], np.array([500.0, 0.52, 0.3, 0.18, 2.0]))


def test_the_ui_form_offers_a_spec_object_beside_a_column_name():
    from segmentation.flows.segmentation import customer_segmentation

    schema = customer_segmentation.parameters.model_dump()
    items = schema["properties"]["features"]["items"]["anyOf"]
    assert items == [{"type": "string"}, {"$ref": "#/definitions/FeatureSpec"}]
    fields = schema["definitions"]["FeatureSpec"]["properties"]
    assert list(fields) == [
        "column",
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
    ]
    assert fields["kind"]["enum"] == ["number", "category", "days_since"]
    assert schema["definitions"]["FeatureSpec"]["required"] == ["column"]
