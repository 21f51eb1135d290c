"""Approve in the UI, for a run started directly: the run the quality gate stopped ends
rejected, and an approve-run flow run (its subflow) pauses with a form; resumed with input
through the API (what the UI's form sends), the run is published with the note; rejected, the
note is stored; left alone, it times out and stays rejected, with its report and event."""

from __future__ import annotations

import json
import threading
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.flow_runs import resume_flow_run

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.tasks.report import SUMMARY_KEY
from support.artifacts import artifacts_of
from support.bi_reader import assert_current_run
from support.processes import wait_for

pytestmark = pytest.mark.usefixtures("prefect_harness")

FAST = {"n_clusters": 4, "n_init": 1}


def in_background(**params) -> tuple[threading.Thread, list]:
    states: list = []
    thread = threading.Thread(target=lambda: states.append(customer_segmentation(**FAST, **params, return_state=True)))
    thread.start()
    return thread, states


def paused_flow_run(conn):
    """The approve-run flow run asking about the rejected run, once it is paused."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    def paused():
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["approve-run"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
        return found[0] if found else None

    return wait_for(paused, timeout=60, interval=0.2, what="the approval to pause for an answer")


def test_an_approved_run_publishes_forced_with_its_note(conn, capsys):
    generate_customers(conn, 2000, seed=91)
    first = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    thread, states = in_background(min_silhouette=0.99, approval_timeout_minutes=1)
    flow_run = paused_flow_run(conn)
    run_id = conn.execute("SELECT run_id FROM segmentation.runs WHERE status = 'rejected'").fetchone()[0]
    assert_current_run(conn, first)  # nothing BI reads has changed while it waits

    keyset = flow_run.state.state_details.run_input_keyset

    def form():  # saved just after the pause
        with get_client(sync_client=True) as client:
            try:
                return {
                    part: client.read_flow_run_input(flow_run.id, key)
                    for part, key in keyset.items()
                    if part != "response"
                }
            except Exception:  # noqa: BLE001 - not saved yet
                return None

    inputs = wait_for(form, timeout=30, interval=0.2, what="the approval form")
    assert '"decision"' in inputs["schema"] and '"note"' in inputs["schema"]
    assert json.loads(inputs["schema"])["required"] == ["decision"]  # no default that silently rejects
    prompt = inputs["description"]
    assert f"The quality gate stopped run {run_id}" in prompt and "below the minimum 0.99" in prompt
    assert f"# Segmentation run {run_id}: rejected" in prompt and "## Segments" in prompt
    assert flow_run.parameters == {"run_id": run_id, "timeout_minutes": 1}
    resume_flow_run(flow_run.id, run_input={"decision": "approve", "note": "checked the segments with marketing"})
    thread.join(60)
    state = states[0]
    assert state.is_completed(), state.message
    assert state.result()["run_id"] == run_id and state.result()["status"] == "published"
    assert_current_run(conn, run_id)
    assert conn.execute(
        "SELECT status, forced, error FROM segmentation.runs WHERE run_id = %s", (run_id,)
    ).fetchone() == ("published", True, None)
    log = conn.execute(
        "SELECT run_id, from_run_id, action, reason FROM segmentation.current_run_log ORDER BY switch_id DESC LIMIT 1"
    ).fetchone()
    assert log == (run_id, first, "promote", "approved in the Prefect UI: checked the segments with marketing")
    assert decisions(conn) == [(run_id, "approved", "checked the segments with marketing")]
    shown = run_text(conn, run_id)
    assert "approved in the Prefect UI despite the quality gate" in shown and "force_publish" not in shown
    assert "checked the segments with marketing" in shown


def decisions(conn) -> list[tuple]:
    return conn.execute("SELECT run_id, decision, note FROM segmentation.approvals ORDER BY approval_id").fetchall()


def run_text(conn, run_id: int) -> str:
    from segmentation.store import readback

    with conn.transaction():
        found = readback.load(conn, run_id, sample_size=0)
    assert found is not None
    return found.text()


def test_a_rejection_keeps_the_run_rejected_with_its_note(conn):
    generate_customers(conn, 2000, seed=93)
    first = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    thread, states = in_background(min_silhouette=0.99, approval_timeout_minutes=1)
    flow_run = paused_flow_run(conn)
    run_id = flow_run.parameters["run_id"]
    resume_flow_run(flow_run.id, run_input={"decision": "reject", "note": "the spending scores look broken"})
    thread.join(60)
    state = states[0]
    assert state.is_failed() and state.name == "Rejected"
    assert state.message.startswith(f"quality gate rejected run {run_id}: ")
    # The decision is a sentence of its own, after the gate's verdict (without its advice to promote by hand).
    assert state.message.endswith("below the minimum 0.99. Rejected in the Prefect UI: the spending scores look broken")
    assert conn.execute("SELECT status FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone() == ("rejected",)
    assert_current_run(conn, first)
    assert decisions(conn) == [(run_id, "rejected", "the spending scores look broken")]
    assert "rejected in the Prefect UI: the spending scores look broken" in run_text(conn, run_id)


def test_a_run_nobody_approves_stays_rejected(conn):
    generate_customers(conn, 2000, seed=92)
    first = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    thread, states = in_background(min_silhouette=0.99, approval_timeout_minutes=0.05)  # 3 s
    thread.join(60)
    state = states[0]
    assert state.is_failed() and state.name == "Rejected"
    run_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    assert "quality gate rejected run" in state.message
    assert state.message.endswith(f"No answer within 0.05 minutes: run {run_id} stays rejected")
    assert conn.execute("SELECT status FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone() == ("rejected",)
    assert_current_run(conn, first)
    assert decisions(conn) == [(run_id, "no answer", "")]
    # The approve-run flow run ended it as a rejected run ends: its report, and its event.
    (approval,) = conn.execute("SELECT flow_run_id FROM segmentation.approvals").fetchone()
    assert SUMMARY_KEY in artifacts_of(approval)
    assert artifacts_of(approval)[SUMMARY_KEY].description == f"Segmentation run {run_id}: summary and segments"
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(approval)])))
    assert {t.name.rsplit("-", 1)[0]: t.state.type.value for t in tasks}["announce"] == "COMPLETED"


def test_an_approval_never_replaces_a_newer_run_and_is_kept_when_refused(conn):
    """Checked under the run lock, in the switch's transaction: a run the gate rejected, then a
    newer run published; approving the older one is refused in one line, the newer one stays
    current, and the person's decision is still on record, shown as not published."""
    from segmentation import operations
    from segmentation.errors import SegmentationError

    generate_customers(conn, 2000, seed=94)
    rejected = customer_segmentation(**FAST, min_silhouette=0.99, return_state=True)
    assert rejected.name == "Rejected"
    rejected_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    newer = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    with pytest.raises(SegmentationError) as refused:
        operations.decide(rejected_id, "approved", "looks fine", None)
    assert str(refused.value) == (
        f"run {rejected_id} was approved but run {newer} was published after it; to replace that one anyway: "
        f"segmentation promote {rejected_id} --force --reason '...'"
    )
    assert_current_run(conn, newer)
    assert decisions(conn) == [(rejected_id, "approved", "looks fine")]
    assert "approved in the Prefect UI (looks fine) but not published" in run_text(conn, rejected_id)
    # And there is nothing to ask about a run that is not rejected.
    with pytest.raises(SegmentationError, match=f"run {newer} is published, not rejected: there is nothing to approve"):
        operations.approval_request(newer)
