"""Approving, in the Prefect UI, a run the quality gate stopped: the run is kept as rejected,
then the flow run waits with a form (approve, note) under the gate's reasons and the run's
summary. Approve publishes that very run, forced, with the note recorded; reject or no answer
in time leaves it rejected.

Two ways to wait. A flow run of a deployment (served, or from a work pool) is suspended
(suspend_flow_run): its process exits, holding neither the run lock nor a concurrency slot, and
Prefect runs the flow run again once someone answers; the flow then finds its own rejected run
(`awaiting_answer`) and acts on the answer without running again (`finish_approval`). It cannot
stay paused in its process: Prefect 3.9 revokes a paused run's deployment concurrency slot and
its engine then crashes the run at the next renewal of that slot's lease, within 5 minutes (seen
231 s into a pause; PrefectHQ/prefect #22885 and #20251 are the same mechanism). A flow run
started directly (`segmentation run`) has no deployment to run it again, so it pauses in its
process (pause_flow_run) and keeps the run lock meanwhile."""

from __future__ import annotations

from typing import Any

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from pydantic import Field

from segmentation import db
from segmentation.errors import SegmentationError, describe
from segmentation.rollback import make_current
from segmentation.settings import Settings
from segmentation.store import readback, runs
from segmentation.store.run import Run


class Approval(RunInput):
    approve: bool = Field(False, description="Publish this run despite the quality gate (it is recorded as forced).")
    note: str = Field("", description="Why: recorded with the run, and shown by `segmentation show`.")


def _connect():
    return db.connect(db.database_url(Settings.from_env()), application_name="segmentation-approval")


@task(name="approval-prompt", cache_policy=NO_CACHE)
def approval_prompt(run_id: int, issues: list[str], minutes: float) -> str:
    """What the person deciding reads above the form: the gate's reasons, then the run's summary
    as the run report shows it."""
    with _connect() as conn, conn.transaction():
        found = readback.load(conn, run_id, sample_size=0)
    reasons = "\n".join(f"- {issue}" for issue in issues)
    return (
        f"## The quality gate stopped run {run_id}\n\n{reasons}\n\n"
        f"Approve to publish this run anyway (recorded as forced, with your note), or leave approve off "
        f"to keep it rejected. Without an answer within {minutes:g} minutes it stays rejected.\n\n"
        + (found.markdown() if found is not None else "")
    )


def _seconds(minutes: float) -> int:
    return max(1, round(minutes * 60))


def _key(run_id: int) -> str:
    return f"approval-of-run-{run_id}"


def wait_for_approval(prompt: str, minutes: float) -> Approval | None:
    """Pause the flow run, in its process, until someone answers the form, or the time is up
    (None). Called from the flow itself: only a flow run can pause."""
    seconds = _seconds(minutes)
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
    run.promote(_reason(note))
    get_run_logger().info("run %d approved and published (forced): %s", run.run_id, note or "(no note)")


def _reason(note: str) -> str:
    return f"approved in the Prefect UI: {note.strip() or '(no note)'}"


def request_approval(run: Run, issues: list[str], minutes: float) -> tuple[bool, str]:
    """Ask, and publish the run when someone approves it. Called from the flow itself (only a
    flow run can pause). Returns (published, what became of it, as a sentence to add to the
    rejection); an error on the way leaves the run rejected, and says why. A flow run of a
    deployment is suspended instead: this then ends the process (Prefect's Pause), and the
    answer is acted on by `finish_approval` when Prefect runs the flow run again."""
    try:
        prompt = approval_prompt(run.run_id, issues, minutes)
        if runtime.deployment.id is not None:
            get_run_logger().info(
                "run %d waits for approval in the Prefect UI for %g minutes; this process exits meanwhile",
                run.run_id,
                minutes,
            )
            suspend_flow_run(
                wait_for_input=Approval.with_initial_data(description=prompt),
                timeout=_seconds(minutes),
                key=_key(run.run_id),
            )
        decision = wait_for_approval(prompt, minutes)
        if decision is None:
            return False, f" No one approved it within {minutes:g} minutes."
        if not decision.approve:
            return False, f" Rejected in the Prefect UI: {decision.note or '(no note)'}"
        publish_approved(run, decision.note)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        return False, f" The approval could not be completed: {describe(exc)}"


def awaiting_answer(flow_run_id: str | None) -> int | None:
    """The run this flow run stopped at the quality gate before it was suspended for approval,
    when Prefect now runs it again; None for a flow run that has not run yet."""
    if flow_run_id is None or runtime.deployment.id is None:
        return None
    with _connect() as conn:
        row = conn.execute(
            "SELECT run_id FROM segmentation.runs WHERE flow_run_id = %s AND status = 'rejected'", (flow_run_id,)
        ).fetchone()
    return None if row is None else int(row[0])


@task(name="publish-approved", cache_policy=NO_CACHE)
def publish_resumed(run_id: int, note: str) -> dict[str, Any]:
    """Publish a run approved while its flow run was suspended, unless a newer run was
    published meanwhile (approving would then replace it: that is a promotion to ask for)."""
    with _connect() as conn:
        current = runs.current_switch(conn)
        if current is not None and current["run_id"] > run_id:
            raise SegmentationError(
                f"run {run_id} was approved but run {current['run_id']} was published after it; "
                f"to replace that one anyway: segmentation promote {run_id} --force --reason '...'"
            )
        make_current(conn, run_id=run_id, reason=_reason(note), force=True)
        figures = conn.execute(
            "SELECT k, n_customers, n_quarantined, churn FROM segmentation.runs WHERE run_id = %s", (run_id,)
        ).fetchone()
    get_run_logger().info("run %d approved and published (forced): %s", run_id, note or "(no note)")
    k, n_customers, n_quarantined, churn = figures
    return {
        "run_id": run_id,
        "status": "published",
        "forced": True,
        "k": k,
        "n_customers": n_customers,
        "n_quarantined": n_quarantined,
        "churn": churn,
    }


def finish_approval(run_id: int) -> tuple[dict[str, Any] | None, str]:
    """Act on the answer to a suspended flow run's form: (the published run's figures, "") or
    (None, what became of it, as a sentence to add to the rejection)."""
    try:
        decision = suspend_flow_run(wait_for_input=Approval, key=_key(run_id))  # answered: returns it
        if decision is None or not decision.approve:
            return None, f" Rejected in the Prefect UI: {(decision.note if decision else '') or '(no note)'}"
        return publish_resumed(run_id, decision.note), ""
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        return None, f" The approval could not be completed: {describe(exc)}"


def rejection(run_id: int) -> str:
    """The gate's reason recorded with the run."""
    with _connect() as conn:
        row = conn.execute("SELECT error FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()
    return str(row[0]) if row and row[0] else f"run {run_id} was rejected by the quality gate"
