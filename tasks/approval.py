"""Approving, in the Prefect UI, a run the quality gate stopped: the run is kept as rejected,
then the flow run waits with a form (approve, note) under the gate's reasons and the run's
summary. Approve publishes that very run, forced, with the note recorded; reject or no answer
in time leaves it rejected.

Two ways to wait. A flow run of a deployment (served, or from a work pool) is suspended
(suspend_flow_run): its process exits, holding neither the run lock nor a concurrency slot, and
Prefect runs the flow run again once someone answers; the flow then finds its own rejected run
(`awaiting_answer`: a run of this flow run whose approval key Prefect recorded as paused on)
and acts on the answer without running again (`finish_approval`). It cannot
stay paused in its process: Prefect 3.9 revokes a paused run's deployment concurrency slot and
its engine then crashes the run at the next renewal of that slot's lease, within 5 minutes (seen
231 s into a pause; PrefectHQ/prefect #22885 and #20251 are the same mechanism). A flow run
started directly (`segmentation run`) has no deployment to run it again, so it pauses in its
process (pause_flow_run) and keeps the run lock meanwhile."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from psycopg.rows import dict_row
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


def _rejected(decision: Approval) -> str:
    return f" Rejected in the Prefect UI: {decision.note or '(no note)'}"


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
            return False, _rejected(decision)
        publish_approved(run, decision.note)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        return False, f" The approval could not be completed: {describe(exc)}"


def awaiting_answer(flow_run_id: str | None) -> tuple[int, str] | None:
    """(run id, status) of the run this flow run was suspended for, to ask for its approval,
    when Prefect now runs the flow run again; None for any other run of the flow, including a
    retry of a flow run whose gate rejected at once (it was never suspended)."""
    if flow_run_id is None or runtime.deployment.id is None:
        return None
    with get_client(sync_client=True) as client:
        keys = client.read_flow_run(UUID(flow_run_id)).empirical_policy.pause_keys or set()
    with _connect() as conn:
        row = conn.execute(
            "SELECT run_id, status FROM segmentation.runs WHERE flow_run_id = %s ORDER BY run_id DESC LIMIT 1",
            (flow_run_id,),
        ).fetchone()
    if row is None or _key(row[0]) not in keys:
        return None
    return int(row[0]), str(row[1])


@task(name="publish-approved", cache_policy=NO_CACHE)
def publish_resumed(run_id: int, note: str) -> None:
    """Publish a run approved while its flow run was suspended, unless a newer run was
    published meanwhile (approving would then replace it: that is a promotion to ask for).
    Checked and switched under the run lock, which make_current takes again."""
    with _connect() as conn:
        if not db.scalar(conn, "SELECT pg_try_advisory_lock(%s)", (runs.RUN_LOCK_KEY,)):
            raise SegmentationError(
                f"a segmentation run is in progress; once it ends, publish run {run_id} with: "
                f"segmentation promote {run_id} --force --reason '...'"
            )
        current = runs.current_switch(conn)
        if current is not None and current["run_id"] > run_id:
            raise SegmentationError(
                f"run {run_id} was approved but run {current['run_id']} was published after it; "
                f"to replace that one anyway: segmentation promote {run_id} --force --reason '...'"
            )
        make_current(conn, run_id=run_id, reason=_reason(note), force=True)
    get_run_logger().info("run %d approved and published (forced): %s", run_id, note or "(no note)")


def run_figures(run_id: int) -> dict[str, Any]:
    """What a run's event and result carry, read back, with the gate's reason as `error`."""
    with _connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT run_id, status, forced, k, n_customers, n_quarantined, churn, quality_issues, error
               FROM segmentation.runs WHERE run_id = %s""",
            (run_id,),
        ).fetchone()
    return dict(row or {"run_id": run_id, "error": None})


def finish_approval(run_id: int, status: str) -> tuple[bool, str]:
    """Act on the answer to a suspended flow run's form: (published, what became of it, as a
    sentence to add to the rejection). A run made current meanwhile by other means (segmentation
    promote) stays as it is."""
    if status == "published":
        return True, ""
    if status != "rejected":
        return False, f" It is {status} now; nothing was done."
    try:
        decision = suspend_flow_run(wait_for_input=Approval, key=_key(run_id))  # answered: returns it
        if not decision.approve:
            return False, _rejected(decision)
        publish_resumed(run_id, decision.note)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - the run stays rejected, and says why
        return False, f" The approval could not be completed: {describe(exc)}"
