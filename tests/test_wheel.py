"""The package as a team installs it into its own worker image: a wheel built from the
repository, installed (not editable) into a fresh environment and used from another
directory, against a database with nothing in it yet."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from support.data import MALL_CSV
from support.databases import with_database

# With pytest-xdist, on one worker: the wheel and its venv are built once, for the module.
pytestmark = pytest.mark.xdist_group("wheel")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a copy without build/: setuptools never clears it, and a module deleted from the
    # tree would still ship from there.
    source = tmp_path_factory.mktemp("source") / "repository"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("customer_segmentation-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with the wheel installed. Its dependencies are this test
    environment's, made visible by a .pth file; the .pth files of this environment (its
    editable install of the repository among them) are not processed there, so the only
    `segmentation` it can import is the wheel's."""
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    Path(target, "_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    # No index, no --no-deps: pip checks that the wheel's declared dependencies are all there.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return env


def test_the_wheel_holds_one_package_with_its_sql(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"segmentation"}
    for expected in (
        "segmentation/flows/segmentation.py",
        "segmentation/flows/deployment.py",
        "segmentation/tasks/score.py",
        "segmentation/sql/001_source_customers.sql",
        "segmentation/sql/roles/segmentation_roles.sql",
        "segmentation/sql/bi/current_run.sql",
        "segmentation/sql/shapes/crm.sql",
        "segmentation/py.typed",
    ):
        assert expected in names
    shipped = {n.removeprefix("segmentation/sql/") for n in names if n.startswith("segmentation/sql/")}
    in_repository = {str(p.relative_to(ROOT / "sql")) for p in (ROOT / "sql").rglob("*.sql")}
    assert shipped == in_repository


@pytest.mark.usefixtures("template")  # which removes, at the end, the roles `db upgrade` creates
def test_the_installed_commands_work_from_another_directory(venv, server_url, prefect_harness, tmp_path):
    name = f"seg_wheel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))  # empty: no migration applied
    env = {
        **os.environ,
        "SEGMENTATION_DATABASE_URL": with_database(server_url, name),
        "SEGMENTATION_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_API_URL": prefect_harness,
        "PYTHONPATH": "",
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def python(code: str) -> str:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def segmentation(*args: str) -> str:
        done = subprocess.run(
            [str(venv / "bin" / "segmentation"), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        where = python("import segmentation; print(segmentation.__file__)")
        assert where.startswith(str(venv)) and "site-packages" in where
        for bare in ("flows", "tasks", "sql"):
            found = python(f"import importlib.util; print(importlib.util.find_spec({bare!r}))")
            assert found.strip() == "None", f"the wheel installs a top-level {bare}"

        bi_files = sorted(p.name for p in (ROOT / "sql" / "bi").glob("*.sql"))
        installed = python(
            "from importlib.resources import files; "
            "print(' '.join(sorted(p.name for p in (files('segmentation') / 'sql' / 'bi').iterdir())))"
        )
        assert installed.split() == bi_files and "current_run.sql" in bi_files
        upgraded = segmentation("db", "upgrade")
        assert "applied 001_source_customers.sql" in upgraded and "database schema is up to date" in upgraded
        assert [f"applied bi/{name}" for name in bi_files] == sorted(
            line for line in upgraded.splitlines() if line.startswith("applied bi/")
        )
        assert "roles segmentation_writer and segmentation_reader and their grants are in place" in upgraded
        assert "loaded 200 customers into public.customers" in segmentation("load-csv", str(MALL_CSV))
        assert "generated 300 customers" in segmentation("generate", "--rows", "300", "--seed", "4")
        assert "generated 150 customers" in segmentation("generate", "--shape", "crm", "--rows", "150")
        ran = segmentation("run", "--k", "5", "--features", "annual_income,spending_score", "--min-silhouette", "0.1")
        assert "500 customers in 5 segments from public.customers" in ran
        assert segmentation("show").splitlines()[1:] == ran.splitlines()[1:]
        assert "the embedded PostgreSQL is not running" in segmentation("embedded", "status")
        with psycopg.connect(with_database(server_url, name)) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM segmentation.schema_migrations ORDER BY 1")]
            assert versions == sorted(int(p.name[:3]) for p in (ROOT / "sql").glob("*.sql"))
            recorded = [r[0] for r in conn.execute("SELECT name || '.sql' FROM segmentation.bi_definitions ORDER BY 1")]
            assert recorded == bi_files
            assert conn.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 500
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
