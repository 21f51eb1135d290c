"""Deploying through a work pool: `segmentation deploy --pool NAME` registers the same nightly
deployment as `segmentation serve`, and a real process worker runs it end to end."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.deployments import run_deployment

from segmentation.cli import main
from segmentation.flows.deployment import DEFAULT_SCHEDULE, DESCRIPTION, TAGS
from segmentation.loading import load_csv
from support.prefect_server import base_env, prefect_client_settings
from support.processes import BIN, Process, tail, wait_for

# With pytest-xdist, the tests of the session's real Prefect server run on one worker: one server starts.
pytestmark = pytest.mark.xdist_group("prefect-server")

POOL = "segmentation-nightly"
DEPLOYMENT = "customer-segmentation/nightly"


def test_a_process_worker_runs_the_deployment(prefect_server, conn, database_url, tmp_path, mall_csv, capsys):
    load_csv(conn, mall_csv)
    env = base_env(tmp_path / "prefect-home")
    env.update(PREFECT_API_URL=prefect_server, SEGMENTATION_DATABASE_URL=database_url, PREFECT_WORKER_QUERY_SECONDS="1")
    with prefect_client_settings(prefect_server):
        assert main(["deploy", "--pool", POOL]) == 1
        assert (
            f"there is no work pool '{POOL}'; create it first, e.g. prefect work-pool create {POOL} --type process"
            in capsys.readouterr().err
        )
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        assert main(["deploy", "--pool", POOL]) == 0
        out = capsys.readouterr().out
        assert f"deployed {DEPLOYMENT}" in out and f"prefect worker start --pool {POOL}" in out
        assert "and approve-run/nightly beside it" in out
    worker = Process([str(BIN / "prefect"), "worker", "start", "--pool", POOL], env, tmp_path / "worker.log")
    try:
        with prefect_client_settings(prefect_server), get_client(sync_client=True) as client:
            found = client.read_deployment_by_name(DEPLOYMENT)
            assert found.work_pool_name == POOL
            assert (found.schedules[0].schedule.cron, found.schedules[0].schedule.timezone) == (DEFAULT_SCHEDULE, "UTC")
            assert found.global_concurrency_limit.limit == 1
            assert found.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
            assert found.description == DESCRIPTION and set(found.tags) == set(TAGS) and found.parameters == {}
            assert found.entrypoint == "segmentation.flows.segmentation.customer_segmentation"
            approvals = client.read_deployment_by_name("approve-run/nightly")
            assert (
                approvals.work_pool_name == POOL and approvals.entrypoint == "segmentation.flows.approval.approve_run"
            )
            assert approvals.global_concurrency_limit is None and not approvals.schedules

            flow_run = run_deployment(
                DEPLOYMENT, parameters={"n_clusters": 5, "features": ["annual_income", "spending_score"]}, timeout=0
            )

            def ended():
                assert worker.running(), f"the worker exited:\n{tail(worker.log)}"
                state = client.read_flow_run(flow_run.id).state
                return state if state.is_final() else None

            state = wait_for(ended, timeout=90, interval=0.5, what="the run on the worker")
            assert state.is_completed(), f"{state}\n{tail(worker.log)}"
    finally:
        worker.stop()
    row = conn.execute("SELECT status, k, n_customers, flow_run_id FROM segmentation.runs").fetchone()
    assert row == ("published", 5, 200, flow_run.id)
