import threading

import psycopg
import pytest

from segmentation import migrations
from segmentation.errors import SegmentationError


def test_upgrade_is_recorded_and_idempotent(conn):
    rows = conn.execute("SELECT version, name FROM segmentation.schema_migrations ORDER BY version").fetchall()
    assert rows == [(m.version, m.name) for m in migrations.discover()]
    assert migrations.upgrade(conn) == []
    views = {r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'segmentation'")}
    assert {"current_customer_segments", "current_segments", "current_segment_centroids"} <= views


def test_two_processes_upgrading_at_once_apply_each_migration_once(server_url, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA segmentation CASCADE")
        conn.execute("DROP TABLE public.customers")
    results, errors = [], []

    def upgrade():
        try:
            with psycopg.connect(database_url) as c:
                results.append(len(migrations.upgrade(c)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(migrations.discover())]


def test_an_edited_migration_is_refused(conn, tmp_path):
    for m in migrations.discover():
        (tmp_path / m.path.name).write_text(m.text)
    first = sorted(tmp_path.glob("001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(SegmentationError, match="changed after it was applied"):
        migrations.upgrade(conn, tmp_path)


def test_a_new_migration_file_is_applied_in_order(conn, tmp_path):
    for m in migrations.discover():
        (tmp_path / m.path.name).write_text(m.text)
    (tmp_path / "900_extra.sql").write_text("CREATE TABLE segmentation.extra (x int);")
    applied = migrations.upgrade(conn, tmp_path)
    assert [m.version for m in applied] == [900]
    assert conn.execute("SELECT to_regclass('segmentation.extra') IS NOT NULL").fetchone()[0]
