"""`segmentation dbt-sources` against a real PostgreSQL: a dbt sources.yml that lists every view of
segmentation_bi with every column, its type and its COMMENT, as the catalog has them."""

from __future__ import annotations

import yaml

from segmentation.cli import main


def test_dbt_sources_lists_every_view_and_column_with_its_comment(conn, database_url, capsys, tmp_path):
    assert main(["dbt-sources"]) == 0
    printed = capsys.readouterr().out
    document = yaml.safe_load(printed)
    assert document["version"] == 2
    (source,) = document["sources"]
    assert (source["name"], source["schema"], source["database"]) == (
        "segmentation",
        "segmentation_bi",
        conn.info.dbname,
    )
    views = {t["name"]: t for t in source["tables"]}
    expected = dict(
        conn.execute(
            """SELECT relname, obj_description(oid, 'pg_class') FROM pg_class
               WHERE relnamespace = 'segmentation_bi'::regnamespace AND relkind = 'v'"""
        )
    )
    assert {name: v["description"] for name, v in views.items()} == expected
    assert {"current_segments", "current_customer_segments", "customer_segment_spells"} <= set(views)
    for name, view in views.items():
        columns = conn.execute(
            """SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)
               FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
            (f"segmentation_bi.{name}",),
        ).fetchall()
        assert [(c["name"], c["data_type"], c.get("description")) for c in view["columns"]] == columns
        assert all(c["description"] for c in view["columns"]), name  # every column of the contract is described
    # --output writes the same file.
    target = tmp_path / "sources.yml"
    assert main(["dbt-sources", "--output", str(target)]) == 0
    assert target.read_text() == printed
    assert (
        capsys.readouterr().out
        == f"wrote {target}: the dbt source segmentation, {len(views)} views of segmentation_bi\n"
    )
