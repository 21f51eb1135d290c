"""The segmentations file: `segmentation serve --config FILE` registers one deployment per
segmentation (customer-segmentation/NAME, limit 1 each, with its schedule and parameters) and
`segmentation deploy --config FILE --pool P` likewise, checked through the real Prefect server's
API; a served run of one publishes into its own views; every mistake in the file is one line, and
nothing is registered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.deployments import run_deployment

from segmentation.cli import main
from segmentation.loading import generate_customers
from support.prefect_server import base_env, prefect_client_settings
from support.processes import Process, tail, wait_for

BIN = Path(sys.executable).parent

CONFIG = """
segmentations:
  - name: mall
    schedule: {cron: "15 3 * * 1-5", timezone: Europe/Berlin}
    parameters: {n_clusters: 4, n_init: 1}
  - name: shoppers
    schedule: {cron: "0 4 * * *"}
    parameters:
      source_table: public.shoppers
      features: [age, annual_income]
      n_clusters: 3
      n_init: 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "segmentations.yaml"
    path.write_text(text)
    return path


def check_registered(client, *, pool: str | None = None) -> None:
    mall = client.read_deployment_by_name("customer-segmentation/mall")
    shoppers = client.read_deployment_by_name("customer-segmentation/shoppers")
    assert (mall.schedules[0].schedule.cron, mall.schedules[0].schedule.timezone) == ("15 3 * * 1-5", "Europe/Berlin")
    assert (shoppers.schedules[0].schedule.cron, shoppers.schedules[0].schedule.timezone) == ("0 4 * * *", "UTC")
    for found in (mall, shoppers):
        assert found.global_concurrency_limit.limit == 1
        assert found.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        assert found.schedules[0].active and not found.paused
        if pool:
            assert found.work_pool_name == pool
    assert mall.parameters == {"n_clusters": 4, "n_init": 1, "segmentation": "mall"}
    assert shoppers.parameters == {
        "source_table": "public.shoppers",
        "features": ["age", "annual_income"],
        "n_clusters": 3,
        "n_init": 1,
        "segmentation": "shoppers",
    }
    assert "segmentation_bi.shoppers_run" in shoppers.description
    for name in ("mall", "shoppers"):  # where a run of it waits for approval
        approvals = client.read_deployment_by_name(f"approve-run/{name}")
        assert approvals.global_concurrency_limit is None and not approvals.schedules


@pytest.mark.xdist_group("prefect-server")
def test_serve_config_registers_one_deployment_per_segmentation(prefect_server, database_url, conn, tmp_path):
    generate_customers(conn, 2000, seed=43)
    conn.execute("CREATE TABLE public.shoppers AS SELECT * FROM public.customers WHERE customer_id <= 1000")
    conn.execute("ALTER TABLE public.shoppers ADD PRIMARY KEY (customer_id)")
    env = base_env(tmp_path / "prefect-home")
    env.update(
        PREFECT_API_URL=prefect_server,
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        SEGMENTATION_DATABASE_URL=database_url,
        SEGMENTATION_CONFIG=str(write(tmp_path, CONFIG)),  # as compose names it
    )
    serve = Process([str(BIN / "segmentation"), "serve"], env, tmp_path / "serve.log")
    try:
        with prefect_client_settings(prefect_server), get_client(sync_client=True) as client:

            def registered():
                assert serve.running(), f"segmentation serve exited:\n{tail(serve.log)}"
                try:
                    client.read_deployment_by_name("approve-run/shoppers")
                    return True
                except Exception:  # noqa: BLE001 - not registered yet
                    return False

            wait_for(registered, timeout=90, interval=0.25, what="the deployments to be registered")
            assert "serving 2 segmentations: customer-segmentation/mall (15 3 * * 1-5, Europe/Berlin); " in (
                serve.log.read_text()
            )
            check_registered(client)

            # A run of one publishes into its own views, with the file's parameters.
            flow_run = run_deployment("customer-segmentation/shoppers", timeout=0)
            state = wait_for(
                lambda: (s := client.read_flow_run(flow_run.id).state).is_final() and s,
                timeout=120,
                interval=0.5,
                what="the shoppers run",
            )
            assert state.is_completed(), f"{state}\n{tail(serve.log)}"
    finally:
        serve.stop()
    assert conn.execute("SELECT segmentation, status, source_table, k FROM segmentation.runs").fetchall() == [
        ("shoppers", "published", "public.shoppers", 3)
    ]
    assert conn.execute("SELECT count(*) FROM segmentation_bi.shoppers_customer_segments").fetchone()[0] == 1000
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 0


@pytest.mark.xdist_group("prefect-server")
def test_deploy_config_registers_them_with_a_work_pool(prefect_server, database_url, tmp_path, capsys):
    pool = "segmentation-configured"
    with prefect_client_settings(prefect_server):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        assert main(["deploy", "--pool", pool, "--config", str(write(tmp_path, CONFIG))]) == 0
        out = capsys.readouterr().out
        assert out.startswith(
            "deployed customer-segmentation/mall (15 3 * * 1-5, Europe/Berlin); customer-segmentation/shoppers "
            "(0 4 * * *, UTC), each with approve-run/<name> beside it, to work pool 'segmentation-configured'"
        )
        with get_client(sync_client=True) as client:
            check_registered(client, pool=pool)


@pytest.mark.unit
def test_every_mistake_in_the_file_is_one_line_and_nothing_is_registered(tmp_path, capsys, monkeypatch):
    bad = write(
        tmp_path,
        """
segmentations:
  - name: rfm
    schedule: {cron: "0 3 * * *", timezone: Europe/Berlin}
    parameters: {source_table: crm.customer_rfm, id_column: id, features: [recency_days, monetary]}
  - name: Demographics
    schedul: {cron: "0 3 * * *"}
  - name: rfm
    schedule: {cron: "0 25 * * *", timezone: Mars/Olympus}
    parameters: {n_clusters: five, colour: blue}
""",
    )
    from segmentation.flows.segmentation import customer_segmentation

    # Every parameter but segmentation, which is the entry's name: n_clusters, k_min, k_max, features, ...
    PARAMETERS = ", ".join(p for p in customer_segmentation.parameters.properties if p != "segmentation")
    assert PARAMETERS.startswith("n_clusters, k_min, k_max, features, source_table, id_column")
    # serve stops before it reaches the database or Prefect: neither is set up here.
    assert main(["serve", "--config", str(bad)]) == 1
    lines = capsys.readouterr().err.splitlines()
    where = str(bad)
    assert lines == [
        f"error: {where}: segmentation 2 (Demographics): unknown key 'schedul'; the keys are name, schedule, parameters",
        f"error: {where}: segmentation 2 (Demographics): segmentation name 'Demographics' is not valid: use a "
        "lowercase letter, then lowercase letters, digits or underscores, at most 38 characters (e.g. rfm or "
        "demographics_2026)",
        f'error: {where}: segmentation 2 (Demographics): no schedule; give one, e.g. schedule: {{cron: "0 3 * * *", '
        "timezone: Europe/Berlin}",
        f"error: {where}: segmentation 3 (rfm): cron '0 25 * * *' is not a cron expression; use five fields, e.g. "
        '"0 3 * * *" for 03:00 daily',
        f"error: {where}: segmentation 3 (rfm): timezone 'Mars/Olympus' is not an IANA time zone; use e.g. UTC or "
        "Europe/Berlin",
        f"error: {where}: segmentation 3 (rfm): parameter n_clusters: Input should be a valid integer, unable to "
        "parse string as an integer (got 'five')",
        f"error: {where}: segmentation 3 (rfm): unknown parameter 'colour'; the flow's parameters are {PARAMETERS}",
        f"error: {where}: segmentation 3 (rfm): the name rfm is taken by segmentation 1; names must differ",
    ]
    # deploy checks the same way, from SEGMENTATION_CONFIG too; a file that is not YAML, or not there.
    monkeypatch.setenv("SEGMENTATION_CONFIG", str(write(tmp_path, "segmentations: [name: x\n")))
    assert main(["deploy", "--pool", "any"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {where}: not valid YAML at line 2, column 1: ")
    assert main(["serve", "--config", str(tmp_path / "nothere.yaml")]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nothere.yaml'}: cannot read it (No such file or directory); give the path of the "
        "segmentations file\n"
    )
    assert main(["serve", "--config", str(write(tmp_path, "segmentations: []\nextra: 1\n"))]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {where}: unknown key 'extra' at the top; the only one is segmentations",
        f"error: {where}: segmentations must be a list of at least one segmentation",
    ]


@pytest.mark.unit
def test_the_prefect_yaml_in_the_docs_is_the_example_segmentations_file():
    import yaml

    from segmentation.config import load

    root = Path(__file__).resolve().parents[1]
    example = load(root / "config" / "segmentations.example.yaml")
    document = yaml.safe_load((root / "docs" / "prefect.yaml").read_text())
    # As `prefect deploy` reads it (Prefect's own model of the file, of the version in constraints.txt).
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(document)
    nightly = [d for d in document["deployments"] if d["entrypoint"].endswith(":customer_segmentation")]
    assert [
        (d["name"], d["parameters"], d["schedules"][0]["cron"], d["schedules"][0]["timezone"], d["concurrency_limit"])
        for d in nightly
    ] == [
        (
            e.name,
            e.flow_parameters(),
            e.schedule.cron,
            e.schedule.timezone,
            {"limit": 1, "collision_strategy": "CANCEL_NEW"},
        )
        for e in example
    ]
    approvals = {d["name"] for d in document["deployments"] if d["entrypoint"] == "flows/approval.py:approve_run"}
    assert approvals == {e.name for e in example}
    for d in document["deployments"]:
        assert (root / d["entrypoint"].split(":")[0]).is_file()


def test_each_example_segmentation_publishes_on_the_data_it_names(conn, mall_csv, capsys):
    """config/segmentations.example.yaml is where a team starts: each of its segmentations, with its
    parameters as they are, publishes on the data it names (the Mall file; the CRM shape's RFM
    view, whose never-ordered customers have no recency)."""
    from segmentation.config import load
    from segmentation.flows.segmentation import customer_segmentation

    assert main(["load-csv", str(mall_csv)]) == 0
    assert main(["generate", "--shape", "crm", "--rows", "5000"]) == 0
    example = load(Path(__file__).resolve().parents[1] / "config" / "segmentations.example.yaml")
    for entry in example:
        # A rejected run would wait for approval (approval_timeout_minutes): here it is rejected at once.
        parameters = {**entry.flow_parameters(), "approval_timeout_minutes": 0}
        result = customer_segmentation(**parameters, return_state=True).result(raise_on_failure=False)
        assert isinstance(result, dict) and result["status"] == "published", (entry.name, result)
    never = conn.execute("SELECT count(*) FROM crm.customer_rfm WHERE recency_days IS NULL").fetchone()[0]
    segments = dict(conn.execute("SELECT segment_name, n_customers FROM segmentation_bi.rfm_segments").fetchall())
    assert segments.pop("Never ordered") == never > 0
    assert sum(segments.values()) == 5000 - never
    # Named in the spec's words, and in the units people read.
    assert any(name.startswith("Recent · ") for name in segments), segments
    assert not any("Low recency" in name or "High recency" in name for name in segments), segments
    assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 200
