"""`segmentation serve` for real: a Prefect server and the serve process as subprocesses,
runs triggered the way the UI's Run button does (run_deployment), checked in the database
and through the Prefect client."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.deployments import run_deployment

from segmentation import __version__
from segmentation.loading import load_csv
from segmentation.tasks.report import K_SELECTION_KEY, PLOT_KEY, SUMMARY_KEY
from support import processes
from support.artifacts import decode_png, picture_size, png_size
from support.bi_reader import assert_current_run
from support.prefect_server import base_env, prefect_client_settings
from support.processes import Process, tail

# With pytest-xdist, the tests of the session's real Prefect server run on one worker: one server starts.
pytestmark = pytest.mark.xdist_group("prefect-server")

BIN = Path(sys.executable).parent
DEPLOYMENT = "customer-segmentation/nightly"
APPROVAL_DEPLOYMENT = "approve-run/nightly"
SCHEDULE, TIMEZONE = "15 3 * * 1-5", "Europe/Berlin"


def wait_for(what: str, check, timeout: float, *logs: Path, interval: float = 0.25):
    """support.processes.wait_for, with the tails of the given process logs in the failure message."""
    try:
        return processes.wait_for(check, timeout, interval, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n" + "\n".join(f"--- {p.name}\n{tail(p)}" for p in logs)) from None


@pytest.fixture
def serve(prefect_server, database_url, tmp_path):
    env = base_env(tmp_path / "prefect-home")
    env.update(
        PREFECT_API_URL=prefect_server,
        PREFECT_RUNNER_POLL_FREQUENCY="1",  # pick triggered runs up within a second, not ten
        SEGMENTATION_DATABASE_URL=database_url,
        SEGMENTATION_SCHEDULE=SCHEDULE,
        SEGMENTATION_TIMEZONE=TIMEZONE,
    )
    process = Process([str(BIN / "segmentation"), "serve"], env, tmp_path / "serve.log")
    try:
        yield process
    finally:
        process.stop()


def flow_run_state(client, flow_run_id):
    return client.read_flow_run(flow_run_id).state


def test_served_deployment_runs_ui_triggered_runs_one_at_a_time(prefect_server, serve, database_url, conn, mall_csv):
    load_csv(conn, mall_csv)
    # The server requires its auth string: a call without it is refused.
    refused = httpx.post(f"{prefect_server}/deployments/filter", json={})
    assert refused.status_code == 401 and refused.json() == {"exception_message": "Unauthorized"}
    with prefect_client_settings(prefect_server), get_client(sync_client=True) as client:

        def deployment():
            assert serve.running(), f"segmentation serve exited:\n{tail(serve.log)}"
            try:
                return client.read_deployment_by_name(DEPLOYMENT)
            except Exception:  # noqa: BLE001 - not registered yet
                return None

        found = wait_for("the deployment to be registered", deployment, 60, serve.log)
        assert found.schedules[0].schedule.cron == SCHEDULE
        assert found.schedules[0].schedule.timezone == TIMEZONE
        assert found.schedules[0].active and not found.paused
        assert found.global_concurrency_limit.limit == 1
        assert found.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        assert found.version == __version__ and set(found.tags) == {"segmentation", "nightly"}
        assert "Nightly customer segmentation" in found.description
        assert found.parameters == {}  # the flow's defaults, as on a scheduled run
        form = found.parameter_openapi_schema["properties"]
        assert {"n_clusters", "features", "source_table", "k_min", "k_max"} <= set(form)
        assert form["features"]["default"] == ["age", "annual_income", "spending_score"]

        # Hold the source table so the first run stays active, deterministically, while the second is started.
        with psycopg.connect(database_url) as blocker:
            blocker.execute("LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE")
            params = {"n_clusters": 5, "features": ["annual_income", "spending_score"]}
            first = run_deployment(DEPLOYMENT, parameters=params, timeout=0)

            def first_is_waiting_on_the_lock():
                return conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]

            wait_for("the first run to reach the source table", first_is_waiting_on_the_lock, 45, serve.log)
            assert flow_run_state(client, first.id).is_running()

            second = run_deployment(DEPLOYMENT, parameters={"n_clusters": 3}, timeout=0)
            cancelled = wait_for(
                "the second run to end",
                lambda: (s := flow_run_state(client, second.id)).is_final() and s,
                30,
                serve.log,
            )
            assert cancelled.is_cancelled(), cancelled
            assert cancelled.message == "Deployment concurrency limit reached."
            blocker.rollback()

        done = wait_for(
            "the first run to end", lambda: (s := flow_run_state(client, first.id)).is_final() and s, 60, serve.log
        )
        assert done.is_completed(), f"{done}\n{tail(serve.log)}"

        # The override reached the flow; the cancelled run never started a run in the database.
        rows = conn.execute("SELECT run_id, status, k, features, params, flow_run_id FROM segmentation.runs").fetchall()
        assert len(rows) == 1
        run_id, status, k, features, stored, flow_run_id = rows[0]
        assert (status, k, features) == ("published", 5, ["annual_income", "spending_score"])
        assert (stored["n_clusters"], stored["features"]) == (5, ["annual_income", "spending_score"])
        assert str(flow_run_id) == str(first.id)
        assert conn.execute("SELECT run_id, n_customers FROM segmentation_bi.current_run").fetchone() == (run_id, 200)

        artifacts = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id]))
            )
        }
        assert set(artifacts) == {SUMMARY_KEY, K_SELECTION_KEY, PLOT_KEY}
        assert f"# Segmentation run {run_id}: published" in artifacts[SUMMARY_KEY].data
        assert "| 81 | 40.5% |" in artifacts[SUMMARY_KEY].data  # the Mall data's middle segment
        assert json.loads(artifacts[K_SELECTION_KEY].data) == [
            {
                "k": 5,
                "inertia": pytest.approx(stored_inertia(conn, run_id), abs=0.01),
                "silhouette": pytest.approx(0.5547, abs=1e-3),
                "chosen": True,
            }
        ]
        assert png_size(decode_png(artifacts[PLOT_KEY].data)) == picture_size(5)

        # A run the user can fix ends with its reason: the state message and the last error in
        # its logs, with no engine traceback after it.
        bad = run_deployment(DEPLOYMENT, parameters={"source_table": "public.nosuch"}, timeout=0)
        failed = wait_for(
            "the bad run to end", lambda: (s := flow_run_state(client, bad.id)).is_final() and s, 60, serve.log
        )
        reason = "source table public.nosuch does not exist; tables in schema public: customers"
        assert failed.is_failed() and failed.message.startswith(reason)
        lines = wait_for(
            "the bad run's logs",
            lambda: (found := run_logs(client, bad.id)) and "Finished in state Failed" in found[-1][1] and found,
            30,
            serve.log,
        )
        errors = [message for level, message in lines if level >= 40]
        assert errors and all(reason in message for message in errors), errors
        assert not any("Traceback" in m or "Engine execution exited" in m for _, m in lines), lines[-3:]
        assert reason in lines[-1][1]

        # Stopping the serve process must not pause the nightly schedule.
        serve.stop(signal.SIGTERM)
        after = client.read_deployment_by_name(DEPLOYMENT)
        assert not after.paused and [s.active for s in after.schedules] == [True], tail(serve.log)


def run_logs(client, flow_run_id) -> list[tuple[int, str]]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), sort=LogSort.TIMESTAMP_ASC
    )
    return [(log.level, log.message) for log in logs]


def stored_inertia(conn, run_id) -> float:
    return conn.execute("SELECT inertia FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()[0]


def test_a_served_run_the_gate_stops_waits_for_approval_without_holding_anything(
    prefect_server, serve, database_url, conn, mall_csv
):
    """In a deployment the nightly run ends Rejected at once, holding nothing, and starts an
    approve-run flow run of the deployment beside it, which waits in its own process with the
    form (that deployment has no concurrency limit, so nothing revokes a slot while it waits).
    The answer publishes that very run; nothing is recomputed."""
    from prefect.flow_runs import resume_flow_run

    load_csv(conn, mall_csv)
    with prefect_client_settings(prefect_server), get_client(sync_client=True) as client:
        wait_for("the deployment", lambda: _deployment(client), 60, serve.log)
        approvals = wait_for("the approval deployment", lambda: _deployment(client, APPROVAL_DEPLOYMENT), 60, serve.log)
        assert approvals.concurrency_limit is None and not approvals.schedules
        first = run_deployment(DEPLOYMENT, parameters={"n_clusters": 5}, timeout=120)
        assert first.state.is_completed(), tail(serve.log)
        first_id = conn.execute("SELECT run_id FROM segmentation.runs").fetchone()[0]
        # A flow run the gate rejected at once, run again (the UI's Retry): a new run, rejected again.
        from prefect.states import Scheduled

        strict = run_deployment(DEPLOYMENT, parameters={"n_clusters": 5, "min_silhouette": 0.99}, timeout=90)
        assert strict.state.is_failed() and strict.state.name == "Rejected", tail(serve.log)
        client.set_flow_run_state(strict.id, Scheduled(), force=True)
        again = wait_for(
            "the retried run to end",
            lambda: (f := client.read_flow_run(strict.id)).run_count > 1 and f.state.is_final() and f.state,
            90,
            serve.log,
        )
        assert again.is_failed() and "below the minimum 0.99" in again.message, again
        assert conn.execute(
            "SELECT array_agg(status ORDER BY run_id) FROM segmentation.runs WHERE flow_run_id = %s", (strict.id,)
        ).fetchone()[0] == ["rejected", "rejected"]
        params = {"n_clusters": 5, "min_silhouette": 0.99, "approval_timeout_minutes": 30}
        gated = run_deployment(DEPLOYMENT, parameters=params, timeout=120)
        assert gated.state.name == "Rejected", tail(serve.log)
        run_id, status = conn.execute(
            "SELECT run_id, status FROM segmentation.runs WHERE flow_run_id = %s", (gated.id,)
        ).fetchone()
        assert status == "rejected"
        assert "Waiting up to 30 minutes for a person to approve or reject it in the Prefect UI: flow run " in (
            gated.state.message
        )
        deployment_id = client.read_deployment_by_name(APPROVAL_DEPLOYMENT).id

        def asking():
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            return found[0] if found and found[0].state.is_paused() else None

        approval = wait_for("the approval to wait for an answer", asking, 90, serve.log)
        assert approval.name in gated.state.message
        assert approval.parameters == {"run_id": run_id, "timeout_minutes": 30}
        # Nothing held meanwhile: no run connection (so no run lock), and the first run still current.
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'segmentation-run%'"
            ).fetchone()[0]
            == 0
        )
        assert_current_run(conn, first_id)
        keyset = approval.state.state_details.run_input_keyset

        def described() -> str | None:
            # Prefect sets the Paused state first and saves the form's description after it.
            from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

            try:
                return client.read_flow_run_input(approval.id, keyset["description"])
            except (ObjectNotFound, PrefectHTTPStatusError):
                return None

        prompt = wait_for("the approval form's description", described, 30, serve.log)
        assert f"The quality gate stopped run {run_id}" in prompt and "below the minimum 0.99" in prompt

        resume_flow_run(approval.id, run_input={"decision": "approve", "note": "checked with marketing"})
        done = wait_for(
            "the approval to end", lambda: (s := flow_run_state(client, approval.id)).is_final() and s, 90, serve.log
        )
        assert done.is_completed(), f"{done}\n{tail(serve.log)}"
    assert_current_run(conn, run_id)
    assert conn.execute(
        "SELECT count(*), bool_and(status = 'published'), bool_and(forced) FROM segmentation.runs "
        "WHERE flow_run_id = %s",
        (gated.id,),
    ).fetchone() == (1, True, True)
    assert conn.execute(
        "SELECT run_id, action, reason FROM segmentation.current_run_log ORDER BY switch_id DESC LIMIT 1"
    ).fetchone() == (run_id, "promote", "approved in the Prefect UI: checked with marketing")
    # The serve console tells of the rejected runs in their one line, without the engine's traceback.
    console = serve.log.read_text()
    assert "below the minimum 0.99" in console and "Traceback" not in console, tail(serve.log, 80)


def _deployment(client, name: str = DEPLOYMENT):
    try:
        return client.read_deployment_by_name(name)
    except Exception:  # noqa: BLE001 - not registered yet
        return None
