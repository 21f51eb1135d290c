"""Approve in the UI: a run the quality gate stopped pauses with a form; resumed with input
through the API (what the UI's form sends), it publishes forced with the note; left alone, it
times out and stays rejected."""

from __future__ import annotations

import threading

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
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
    """The flow run of the run in progress, once it is paused."""

    def paused():
        row = conn.execute("SELECT flow_run_id FROM segmentation.runs WHERE status = 'rejected'").fetchone()
        if row is None or row[0] is None:
            return None
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(row[0])
        return flow_run if flow_run.state.is_paused() else None

    return wait_for(paused, timeout=60, interval=0.2, what="the run to pause for approval")


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
    assert '"approve"' in inputs["schema"] and '"note"' in inputs["schema"]
    prompt = inputs["description"]
    assert f"The quality gate stopped run {run_id}" in prompt and "below the minimum 0.99" in prompt
    assert f"# Segmentation run {run_id}: rejected" in prompt and "## Segments" in prompt
    resume_flow_run(flow_run.id, run_input={"approve": True, "note": "checked the segments with marketing"})
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


def test_a_run_nobody_approves_stays_rejected(conn):
    generate_customers(conn, 2000, seed=92)
    first = customer_segmentation(**FAST, return_state=True).result()["run_id"]
    thread, states = in_background(min_silhouette=0.99, approval_timeout_minutes=0.05)  # 3 s
    thread.join(60)
    state = states[0]
    assert state.is_failed()
    assert "quality gate rejected run" in state.message and "No one approved it within 0.05 minutes." in state.message
    assert conn.execute("SELECT status FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone() == ("rejected",)
    assert_current_run(conn, first)
