"""docker-compose.yml and the Dockerfile, checked statically (there is no Docker engine in CI):
every command exists, every variable set is one the code or Prefect reads, the health and
dependency wiring holds, and no secret is committed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import prefect.settings
import pytest
import yaml
from sqlalchemy.engine import make_url  # Prefect's own database URL is a SQLAlchemy URL

from segmentation import dburl
from segmentation.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
SEGMENTATION_VAR = re.compile(r"SEGMENTATION_[A-Z_]+")


def commands(service: dict) -> list[list[str]]:
    """The argv of each command a service runs, unwrapping `sh -c "a && exec b"`."""
    command = service.get("command")
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    steps = [shlex.split(step) for step in argv[2].split("&&")]
    return [step[1:] if step[0] == "exec" else step for step in steps]


def variables_read_by_the_code() -> set[str]:
    names = set()
    for path in [*ROOT.glob("segmentation/**/*.py"), *ROOT.glob("flows/*.py"), *ROOT.glob("tasks/*.py")]:
        names |= set(SEGMENTATION_VAR.findall(path.read_text()))
    return names - {"SEGMENTATION_TEST_DATABASE_URL"}


def interpolated(value: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_]+)", value))


def without_interpolation(value: str) -> str:
    return re.sub(r"\$\{[^}]*\}", "x", value)


def test_the_five_services_the_dask_profile_and_their_images():
    assert {n for n, s in SERVICES.items() if "profiles" not in s} == {
        "postgres",
        "prefect-server",
        "db-setup",
        "segmentation",
        "demo-data",
    }
    assert {n for n, s in SERVICES.items() if s.get("profiles") == ["dask"]} == {"dask-scheduler", "dask-worker"}
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["prefect-server"]["image"].startswith("prefecthq/prefect:3")
    for name in ("db-setup", "segmentation", "demo-data", "dask-scheduler", "dask-worker"):
        assert SERVICES[name]["build"] == "."
        assert SERVICES[name]["image"] == "customer-segmentation:latest"
    # --scale dask-worker=N: no fixed name or host port.
    assert "container_name" not in SERVICES["dask-worker"] and "ports" not in SERVICES["dask-worker"]


def test_dask_commands_exist_and_the_workers_reach_the_scheduler_and_the_database():
    scheduler, worker = commands(SERVICES["dask-scheduler"]), commands(SERVICES["dask-worker"])
    assert scheduler == [["dask", "scheduler", "--host", "0.0.0.0", "--port", "8786", "--no-dashboard"]]
    assert worker == [["dask", "worker", "tcp://dask-scheduler:8786", "--nthreads", "1", "--no-dashboard"]]
    for argv in (scheduler[0], worker[0]):
        help_text = subprocess.run(
            [str(Path(sys.executable).parent / "dask"), argv[1], "--help"], capture_output=True, text=True, check=True
        ).stdout
        for option in (a for a in argv[2:] if a.startswith("--")):
            assert option in help_text, option
    # The workers have what the flow has: the database URL and the Prefect API.
    assert SERVICES["dask-worker"]["environment"] == SERVICES["segmentation"]["environment"]
    assert SERVICES["segmentation"]["environment"]["SEGMENTATION_DASK_ADDRESS"] == "${SEGMENTATION_DASK_ADDRESS:-}"
    assert "SEGMENTATION_DASK_ADDRESS=tcp://dask-scheduler:8786" in (ROOT / ".env.example").read_text()
    assert "8786" in " ".join(SERVICES["dask-scheduler"]["healthcheck"]["test"])


def test_segmentation_commands_exist_in_the_cli():
    parser = build_parser()
    expected = {
        "db-setup": [["segmentation", "db", "upgrade"]],
        "segmentation": [["segmentation", "serve"]],
        "demo-data": [["segmentation", "generate", "--rows", "5000", "--if-empty"]],
    }
    for name, argvs in expected.items():
        assert commands(SERVICES[name]) == argvs
        for argv in argvs:
            args = parser.parse_args(argv[1:])  # exits (fails the test) on an unknown command or option
            assert callable(args.func)
    assert SERVICES["demo-data"]["restart"] == SERVICES["db-setup"]["restart"] == "no"  # one-shot


def test_prefect_server_command_exists_and_listens_on_4200():
    [argv] = commands(SERVICES["prefect-server"])
    assert argv[:3] == ["prefect", "server", "start"]
    help_text = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), *argv[1:3], "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in argv[3::2]:
        assert option in help_text
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "4200"
    # Published on this host only: exposing it is a deliberate step (docs/operations.md: behind a TLS proxy).
    assert SERVICES["prefect-server"]["ports"] == ["127.0.0.1:4200:4200"]


def test_environment_variables_are_the_ones_the_code_and_prefect_read():
    code_reads = variables_read_by_the_code()
    for name in ("db-setup", "segmentation", "demo-data", "prefect-server", "dask-worker"):
        for variable in SERVICES[name]["environment"]:
            if variable.startswith("SEGMENTATION_"):
                assert variable in code_reads, f"{name} sets {variable}, which nothing reads"
            else:
                # prefect.settings exposes every setting under its environment variable name.
                assert hasattr(prefect.settings, variable), f"{name} sets {variable}, which is not a Prefect setting"
    # Every variable the code reads is documented in the settings table of docs/configuration.md.
    for variable in code_reads:
        assert f"| `{variable}` |" in CONFIGURATION, f"{variable} is not documented in docs/configuration.md"
    assert {"SEGMENTATION_SCHEDULE", "SEGMENTATION_TIMEZONE", "SEGMENTATION_DATABASE_URL"} <= code_reads


def test_urls_point_at_the_services_that_serve_them():
    postgres = SERVICES["postgres"]["environment"]
    env = SERVICES["segmentation"]["environment"]
    flow_url = without_interpolation(env["SEGMENTATION_DATABASE_URL"])
    url = dburl.parse(flow_url)
    assert (flow_url.split("://")[0], url["host"], url["port"], url["dbname"]) == (
        "postgresql",
        "postgres",
        "5432",
        postgres["POSTGRES_DB"],
    )
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    # The flow logs in as the writer's member; only the setup and the demo loader are the owner.
    assert url["user"] == "segmentation_flow"
    assert "${SEGMENTATION_DB_PASSWORD:?" in env["SEGMENTATION_DATABASE_URL"]
    assert SERVICES["db-setup"]["environment"] == SERVICES["demo-data"]["environment"]
    owner = dburl.parse(without_interpolation(SERVICES["db-setup"]["environment"]["SEGMENTATION_DATABASE_URL"]))
    assert (owner["user"], owner["host"], owner["dbname"]) == (
        postgres["POSTGRES_USER"],
        "postgres",
        postgres["POSTGRES_DB"],
    )
    flow_login = (ROOT / "docker/postgres-init/20-segmentation-flow.sh").read_text()
    assert "CREATE ROLE segmentation_writer NOLOGIN;" in flow_login
    assert "CREATE ROLE segmentation_flow LOGIN PASSWORD :'flow_password' IN ROLE segmentation_writer;" in flow_login
    assert '--set=flow_password="$SEGMENTATION_DB_PASSWORD"' in flow_login
    assert postgres["SEGMENTATION_DB_PASSWORD"].startswith("${SEGMENTATION_DB_PASSWORD:?")

    server = SERVICES["prefect-server"]["environment"]
    prefect_db = make_url(without_interpolation(server["PREFECT_API_DATABASE_CONNECTION_URL"]))
    assert (prefect_db.drivername, prefect_db.host, prefect_db.database) == (
        "postgresql+asyncpg",
        "postgres",
        "prefect",
    )
    assert server["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    # The server requires the auth string, and every service that calls it sends the same one.
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?")
    for name, service in SERVICES.items():
        if "PREFECT_API_URL" in service.get("environment", {}):
            assert service["environment"].get("PREFECT_API_AUTH_STRING") == env["PREFECT_API_AUTH_STRING"], name
    init = (ROOT / "docker/postgres-init/10-prefect-database.sh").read_text()
    assert f"CREATE ROLE {prefect_db.username} LOGIN" in init
    assert f"CREATE DATABASE {prefect_db.database} OWNER {prefect_db.username}" in init
    assert "CREATE EXTENSION IF NOT EXISTS pg_trgm" in init
    assert "./docker/postgres-init:/docker-entrypoint-initdb.d:ro" in SERVICES["postgres"]["volumes"]


def test_health_and_start_order():
    assert SERVICES["postgres"]["shm_size"] == "1gb"  # parallel hash joins need more than Docker's 64MB
    volume = SERVICES["postgres"]["volumes"][0].split(":")[0]
    assert volume in COMPOSE["volumes"]  # a named volume, not a bind mount
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "/api/health" in " ".join(SERVICES["prefect-server"]["healthcheck"]["test"])
    healthy = {"condition": "service_healthy"}
    assert SERVICES["prefect-server"]["depends_on"] == {"postgres": healthy}
    done = {"condition": "service_completed_successfully"}
    assert SERVICES["db-setup"]["depends_on"] == {"postgres": healthy}
    assert SERVICES["segmentation"]["depends_on"] == {"postgres": healthy, "prefect-server": healthy, "db-setup": done}
    assert SERVICES["demo-data"]["depends_on"] == {"db-setup": done}
    assert SERVICES["dask-worker"]["depends_on"] == {"dask-scheduler": healthy, "postgres": healthy}
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition == done:
                assert SERVICES[dependency]["restart"] == "no", f"{name} waits for {dependency} to finish"
            else:
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"


def test_no_secret_is_committed():
    text = (ROOT / "docker-compose.yml").read_text()
    needed = interpolated(text)
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # Passwords and the Prefect auth string: required from .env, no default in the compose file.
    for secret in ("POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "SEGMENTATION_DB_PASSWORD", "PREFECT_AUTH_STRING"):
        assert secret in needed and secret in example
        assert not re.search(rf"\$\{{{secret}:-", text) and re.search(rf"\$\{{{secret}:\?", text)
    # No literal password anywhere: password variables and the password part of URLs come from .env.
    for service in SERVICES.values():
        for key, value in service.get("environment", {}).items():
            if "PASSWORD" in key or "AUTH_STRING" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), key
            for password in re.findall(r"//[^:/@]+:([^@]+)@", value):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), key
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert tracked == ""


@pytest.mark.parametrize("part", ["pyproject.toml", "segmentation", "flows", "tasks", "sql"])
def test_dockerfile_builds_the_wheel_from_every_part_it_needs(part):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^COPY {re.escape(part)}( README.md)? \./({re.escape(part)})?$", dockerfile, re.M)
    # The links that make flows/, tasks/ and sql/ part of the package must resolve in the image too.
    for link in ("flows", "tasks", "sql"):
        assert (ROOT / "segmentation" / link).resolve() == ROOT / link


def test_dockerfile_installs_the_wheel_not_the_checkout():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11" in dockerfile
    assert "RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in dockerfile
    assert (
        '/app/.venv/bin/pip install --no-cache-dir -c /wheels/constraints.txt "$(ls /wheels/*.whl)[dask]"' in dockerfile
    )
    assert "-e " not in dockerfile and "[test]" not in dockerfile
    assert 'PATH="/app/.venv/bin:$PATH"' in dockerfile
    # The runtime stage works from a directory holding no source, like a worker image.
    runtime = dockerfile.split("\nFROM ")[-1]
    assert "COPY segmentation" not in runtime and "WORKDIR /home/segmentation" in runtime
    # It installs the versions CI tests: the lock, constraints.txt, copied in beside the wheel.
    assert "COPY constraints.txt /wheels/constraints.txt" in runtime


def test_the_segmentations_file_reaches_serve_and_the_example_is_valid():
    from segmentation.config import CONFIG_ENV, load

    env = SERVICES["segmentation"]["environment"]
    assert env[CONFIG_ENV] == "${SEGMENTATION_CONFIG:-}"  # empty: the one nightly deployment
    assert "./config:/config:ro" in SERVICES["segmentation"]["volumes"]
    example = load(ROOT / "config" / "segmentations.example.yaml")
    assert [(d.name, d.schedule.cron, d.schedule.timezone) for d in example] == [
        ("default", "0 2 * * *", "UTC"),
        ("rfm", "0 3 * * *", "Europe/Berlin"),
    ]
    assert f"{CONFIG_ENV}=/config/segmentations.yaml" in (ROOT / ".env.example").read_text()
