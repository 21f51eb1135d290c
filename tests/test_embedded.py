"""With no database configured, everything runs on an embedded PostgreSQL."""

import psycopg

from segmentation import bi_definitions, db, embedded, migrations
from segmentation.cli import main
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
            assert [f.filename for f in migrations.upgrade(conn)] == [m.filename for m in migrations.discover()] + [
                d.filename for d in bi_definitions.discover(migrations.SQL_DIR / "bi")
            ]
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
        assert db.database_url(Settings.from_env()) == url  # the running server is reused
        with psycopg.connect(url) as conn:
            assert migrations.upgrade(conn) == []
    finally:
        embedded.stop(settings)


def test_embedded_status_and_stop_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SEGMENTATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("SEGMENTATION_DATA_DIR", str(tmp_path / "home"))
    assert main(["embedded", "status"]) == 0
    assert capsys.readouterr().out.startswith("the embedded PostgreSQL is not running (no data yet at ")
    settings = Settings.from_env()
    url = db.database_url(settings)  # started on demand, as any command would
    try:
        pid = embedded.status(settings).pid
        assert pid is not None
        assert main(["embedded", "status"]) == 0
        out = capsys.readouterr().out
        assert f"the embedded PostgreSQL is running (pid {pid}, data in {tmp_path / 'home' / 'pgdata'})" in out
        assert main(["embedded", "stop"]) == 0
        assert f"stopped the embedded PostgreSQL (pid {pid}); its data stays in" in capsys.readouterr().out
        assert embedded.status(settings).pid is None
        try:
            psycopg.connect(url, connect_timeout=2).close()
            raise AssertionError("the server still accepts connections")
        except psycopg.OperationalError:
            pass
        assert main(["embedded", "stop"]) == 0
        assert "is not running (data in" in capsys.readouterr().out
        assert db.database_url(Settings.from_env()).startswith("postgresql://")  # the next command starts it again
        assert embedded.status(settings).pid not in (None, pid)
    finally:
        embedded.stop(settings)
