"""A run's outcome as one value: its message reads as sentences, and its result and event
payload carry the same figures."""

from __future__ import annotations

import pytest

from segmentation.events import PAYLOAD_KEYS, run_event
from segmentation.outcome import Outcome

pytestmark = pytest.mark.unit

GATE = "quality gate rejected run 7: silhouette 0.390 is below the minimum 0.99 (or start it again with force_publish=true)"


def test_each_later_reason_is_a_sentence_of_its_own():
    rejected = Outcome("rejected", 7, "public.customers", reasons=(GATE,))
    assert rejected.message == GATE
    decided = rejected.also("Rejected in the Prefect UI: the scores look broken")
    assert decided.message == GATE + ". Rejected in the Prefect UI: the scores look broken"
    assert decided.also("Checked.").message.endswith("broken. Checked.")
    assert rejected.reasons == (GATE,)  # also() leaves the outcome it was called on as it was
    assert Outcome("published", 8, "public.customers").message is None


def test_the_result_and_the_event_carry_the_same_figures():
    outcome = Outcome(
        "published",
        8,
        "crm.customers",
        figures={"k": 5, "n_customers": 200, "n_quarantined": 1, "inertia": 3.5, "silhouette": 0.41, "churn": 0.02},
        quality_issues=("a segment holds 0.5% of customers",),
        forced=True,
        segmentation="rfm",
    )
    assert outcome.kept
    assert outcome.result() == {
        "run_id": 8,
        "status": "published",
        "segmentation": "rfm",
        "k": 5,
        "n_customers": 200,
        "n_quarantined": 1,
        "inertia": 3.5,
        "silhouette": 0.41,
        "churn": 0.02,
        "forced": True,
        "quality_issues": ["a segment holds 0.5% of customers"],
    }
    payload = run_event("published", outcome.payload(), flow_run_id="abc")["payload"]
    assert set(payload) == set(PAYLOAD_KEYS)
    assert payload["source_table"] == "crm.customers" and payload["error"] is None and payload["churn"] == 0.02
    assert payload["segmentation"] == "rfm"


def test_a_run_that_failed_before_it_was_recorded_is_not_kept():
    failed = Outcome("failed", None, "public.nosuch", reasons=("source table public.nosuch does not exist",))
    assert not failed.kept
    assert failed.payload()["error"] == "source table public.nosuch does not exist"
