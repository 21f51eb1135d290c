"""The approve-run flow: a person's decision, in the Prefect UI, on a run the quality gate
rejected (segmentation.tasks.approval says how it waits). Orchestration only: the request, the
wait, the decision, and the outcome's consequences (segmentation.tasks.conclude)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State

from segmentation import logs
from segmentation.errors import describe
from segmentation.outcome import Outcome
from segmentation.tasks.approval import APPROVE_FLOW_NAME, approval_prompt, decide, outcome_now, wait_for_answer
from segmentation.tasks.conclude import conclude, end


@flow(name=APPROVE_FLOW_NAME, validate_parameters=True)
def approve_run(run_id: int, timeout_minutes: float = 60) -> dict[str, Any] | State:
    """Ask a person to approve or reject a run the quality gate rejected; the nightly flow starts
    it when its approval_timeout_minutes is above 0.

    Args:
        run_id: The rejected run (see: segmentation runs).
        timeout_minutes: How long to wait for an answer; without one the run stays rejected.
    """
    logs.install()
    try:
        rejected, prompt = approval_prompt(run_id, timeout_minutes)
        answer = wait_for_answer(prompt, timeout_minutes)
        outcome = decide(rejected, answer, timeout_minutes)
    except Exception as exc:  # noqa: BLE001 - what became of the run is the database's to say
        reason = f"The approval could not be completed: {describe(exc)}"
        now = outcome_now(run_id)
        if now is None or now.status != "rejected":
            # Not a rejected run (any more): it is what it was; this flow run only failed to act.
            return end(Outcome("failed", run_id, "", reasons=(reason,)))
        outcome = now.also(reason)
    return conclude(outcome)
