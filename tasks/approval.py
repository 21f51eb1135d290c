"""Approving, in the Prefect UI, a run the quality gate stopped: the run is kept as rejected,
then the flow run pauses with a form (approve, note) under the gate's reasons and the run's
summary. Approve publishes that very run, forced, with the note recorded; reject or no answer
in time leaves it rejected."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from pydantic import Field

from segmentation import db
from segmentation.errors import describe
from segmentation.settings import Settings
from segmentation.store import readback
from segmentation.store.run import Run


class Approval(RunInput):
    approve: bool = Field(False, description="Publish this run despite the quality gate (it is recorded as forced).")
    note: str = Field("", description="Why: recorded with the run, and shown by `segmentation show`.")


@task(name="approval-prompt", cache_policy=NO_CACHE)
def approval_prompt(run_id: int, issues: list[str], minutes: float) -> str:
    """What the person deciding reads above the form: the gate's reasons, then the run's summary
    as the run report shows it."""
    with (
        db.connect(db.database_url(Settings.from_env()), application_name="segmentation-approval") as conn,
        conn.transaction(),
    ):
        found = readback.load(conn, run_id, sample_size=0)
    reasons = "\n".join(f"- {issue}" for issue in issues)
    return (
        f"## The quality gate stopped run {run_id}\n\n{reasons}\n\n"
        f"Approve to publish this run anyway (recorded as forced, with your note), or leave approve off "
        f"to keep it rejected. Without an answer within {minutes:g} minutes it stays rejected.\n\n"
        + (found.markdown() if found is not None else "")
    )


def wait_for_approval(prompt: str, minutes: float) -> Approval | None:
    """Pause the flow run until someone answers the form, or the time is up (None). Called from
    the flow itself: only a flow run can pause."""
    seconds = max(1, round(minutes * 60))
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


@task(name="publish-approved", cache_policy=NO_CACHE)
def publish_approved(run: Run, note: str) -> None:
    run.promote(f"approved in the Prefect UI: {note.strip() or '(no note)'}")
    get_run_logger().info("run %d approved and published (forced): %s", run.run_id, note or "(no note)")


def request_approval(run: Run, issues: list[str], minutes: float) -> tuple[bool, str]:
    """Ask, and publish the run when someone approves it. Called from the flow itself (only a
    flow run can pause). Returns (published, what became of it, as a sentence to add to the
    rejection); an error on the way leaves the run rejected, and says why."""
    try:
        decision = wait_for_approval(approval_prompt(run.run_id, issues, minutes), minutes)
        if decision is None:
            return False, f" No one approved it within {minutes:g} minutes."
        if not decision.approve:
            return False, f" Rejected in the Prefect UI: {decision.note or '(no note)'}"
        publish_approved(run, decision.note)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        return False, f" The approval could not be completed: {describe(exc)}"
