"""Asking a person to approve, in the Prefect UI, a run the quality gate rejected: the units the
approve-run flow (segmentation.flows.approval) calls, and how the nightly flow asks for it.

The nightly run ends Rejected first, and lets go of everything (the run lock, its deployment's
concurrency slot). The approve-run flow run then waits in its own process (pause_flow_run) with
a form, under the gate's reasons and the run's summary: an explicit decision, approve or reject,
and a note. Its deployment has no concurrency limit, so waiting holds no slot whose lease
Prefect would revoke (a paused run of a limited deployment is crashed at the lease's next
renewal, within 5 minutes: PrefectHQ/prefect #22885). Approved: the run is made current through
the promote path (segmentation.rollback.make_current), unless a newer run was published
meanwhile. Every answer, and no answer in time, is recorded in segmentation.approvals."""

from __future__ import annotations

from typing import Any, Literal

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Failed, Running
from pydantic import Field

from segmentation import operations
from segmentation.outcome import Outcome

APPROVE_FLOW_NAME = "approve-run"


class Approval(RunInput):
    decision: Literal["approve", "reject"] = Field(
        description="approve: publish this run despite the quality gate. reject: keep it rejected."
    )
    note: str = Field("", description="Why: stored with the run, and shown by `segmentation show --run RUN_ID`.")


@task(name="approval-prompt", cache_policy=NO_CACHE)
def approval_prompt(run_id: int, minutes: float) -> tuple[Outcome, str]:
    """The rejected run (segmentation.operations.approval_request), and the text above the form:
    the gate's reasons, then the run's summary as the run report shows it."""
    request = operations.approval_request(run_id)
    reasons = "\n".join(f"- {issue}" for issue in request.outcome.quality_issues)
    prompt = (
        f"## The quality gate stopped run {run_id}\n\n{reasons}\n\n"
        f"Choose **approve** to publish this run anyway (recorded as approved by a person, with your note), or "
        f"**reject** to keep it rejected. Without an answer within {minutes:g} minutes it stays rejected.\n\n"
        + request.report.markdown()
    )
    return request.outcome, prompt


def wait_for_answer(prompt: str, minutes: float) -> Approval | None:
    """Pause the flow run, in its process, until someone answers the form, or the time is up
    (None). Called from the flow itself: only a flow run can pause."""
    seconds = max(1, round(minutes * 60))
    get_run_logger().info(
        "waiting up to %g minutes for a person to approve or reject the run: Resume on this flow run's page "
        "shows the gate's reasons, the run's summary and the form",
        minutes,
    )
    try:
        return pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=prompt),
            timeout=seconds,
            poll_interval=min(5, max(1, seconds // 10)),
        )
    except FlowPauseTimeout:
        # The flow run is still Paused on the server, whose pause-expiry service would soon fail
        # it with its own message ("never resumed"); it runs on, to end rejected with ours.
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(context.flow_run.id, Running(), force=True)
        return None


@task(name="decide", cache_policy=NO_CACHE)
def decide(rejected: Outcome, answer: Approval | None, minutes: float) -> Outcome:
    """Act on the answer (segmentation.operations.decide: approve publishes the run, unless a
    newer one was published meanwhile; reject or no answer keeps it rejected; each is recorded
    with its note). Returns what became of the run, the decision as a sentence of its own."""
    run_id = rejected.run_id
    assert run_id is not None
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    logger = get_run_logger()
    if answer is None:
        operations.decide(run_id, "no answer", "", flow_run_id)
        logger.warning("run %d: no answer within %g minutes; it stays rejected", run_id, minutes)
        return rejected.also(f"No answer within {minutes:g} minutes: run {run_id} stays rejected")
    note = answer.note.strip()
    if answer.decision == "reject":
        operations.decide(run_id, "rejected", note, flow_run_id)
        logger.info("run %d rejected in the Prefect UI: %s", run_id, note or "(no note)")
        return rejected.also(f"Rejected in the Prefect UI: {note or '(no note)'}")
    published = operations.decide(run_id, "approved", note, flow_run_id)
    logger.info("run %d approved in the Prefect UI and published: %s", run_id, note or "(no note)")
    return published


@task(name="outcome-now", cache_policy=NO_CACHE)
def outcome_now(run_id: int) -> Outcome | None:
    """What became of the run, as the database has it now; None when that cannot be read."""
    try:
        return operations.run_outcome_by_id(run_id)
    except Exception as exc:  # noqa: BLE001 - the caller says what it knows
        get_run_logger().warning("could not read run %d: %s", run_id, exc)
        return None


def request_approval(outcome: Outcome, minutes: float) -> dict[str, Any] | State:
    """Ask for a person's decision on a rejected run; the end of the nightly flow run. A run of
    a deployment starts a flow run of the approve-run deployment (as its subflow, so that its page
    lists it) and ends Rejected, saying where to answer. A run started directly (`segmentation run`, a flow call) has no
    deployment to start, so the approve-run flow runs as its subflow, waiting in this process,
    and its end is this flow run's end."""
    from segmentation.flows.approval import approve_run
    from segmentation.tasks.conclude import announce, end

    assert outcome.run_id is not None
    deployment = runtime.deployment.name
    if deployment is None:
        decided = approve_run(run_id=outcome.run_id, timeout_minutes=minutes, return_state=True)
        # Its end, as this flow run's own (a subflow's state returned as it is counts as one failed "state").
        if decided.is_completed():
            return decided.result()
        return Failed(name=decided.name, message=decided.message)
    try:
        flow_run = start_approval(outcome.run_id, minutes, f"{APPROVE_FLOW_NAME}/{deployment}")
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        unasked = outcome.also(f"The approval could not be requested: {exc}")
        announce(unasked)
        return end(unasked)
    return end(
        outcome.also(
            f"Waiting up to {minutes:g} minutes for a person to approve or reject it in the Prefect UI: flow run {flow_run}"
        )
    )


@task(name="request-approval", cache_policy=NO_CACHE)
def start_approval(run_id: int, minutes: float, deployment: str) -> str:
    """A flow run of the approve-run deployment for run_id, not waited for. Returns its name,
    its deployment and, when Prefect knows its UI's address, its page."""
    from prefect.deployments import run_deployment
    from prefect.utilities.urls import url_for

    # As a subflow: the nightly flow run's page lists it among its subflow runs, one click away.
    flow_run = run_deployment(deployment, parameters={"run_id": run_id, "timeout_minutes": minutes}, timeout=0)
    assert isinstance(flow_run, FlowRun)  # called from sync code
    page = url_for(flow_run)
    get_run_logger().info("run %d waits for approval in flow run %s (%s)", run_id, flow_run.name, deployment)
    return f"{flow_run.name} of {deployment}" + (f" ({page})" if page else "")
