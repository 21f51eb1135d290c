"""The BI contract (schema segmentation_bi, defined by sql/bi/): what a BI tool reads is a file
under review, tests/data/bi_contract.txt, and a database gets the same contract however it got to
today's version."""

import difflib
import os
from pathlib import Path

import pytest

from segmentation import bi_definitions, migrations
from support.schema import bi_catalog, sql_copy

SNAPSHOT = Path(__file__).resolve().parent / "data" / "bi_contract.txt"
WRITE_ENV = "SEGMENTATION_WRITE_BI_CONTRACT"
REGENERATE = f"{WRITE_ENV}=1 .venv/bin/python -m pytest -n 0 tests/test_bi_contract.py -k snapshot"
BI_FILES_SINCE = 12  # sql/012_bi_definitions.sql: the releases before it had no sql/bi/
# The BI files as released with the migrations up to a version, where today's need a later one:
# release 12's, until 014 made them read each segmentation's own rows (columns 014 added, and not
# the view it dropped); release 14's until 015 added the columns the next read; release 15's until
# 016 and 017 added the tables today's read; release 17's until 019 added the tables of the change
# feed (current_segment_changes, current_segment_transitions); release 19's until 020 added the
# columns of confidence (margin, outlier_distance, n_outliers) and predict's margin and outlier.
RELEASED = Path(__file__).parent / "data" / "bi_releases"
BI_RELEASES = {
    12: RELEASED / "012",
    14: RELEASED / "014",
    15: RELEASED / "015",
    17: RELEASED / "017",
    19: RELEASED / "019",
}
TODAYS_BI_SINCE = 20
VERSIONS = [m.version for m in migrations.discover()]


def contract(conn) -> str:
    """What segmentation_bi shows a BI tool, from the catalog: each view's columns in order, with
    their types, and each function's arguments and result columns; every description."""
    lines = [
        "# The BI contract: what schema segmentation_bi shows a BI tool (sql/bi/), read from the catalog",
        "# of a migrated database. tests/test_bi_contract.py fails when the two differ; after changing",
        "# sql/bi/ on purpose, regenerate this file and commit it with the change:",
        f"#   {REGENERATE}",
        "",
        "schema segmentation_bi -- {}".format(
            conn.execute("SELECT obj_description('segmentation_bi'::regnamespace, 'pg_namespace')").fetchone()[0]
        ),
    ]
    views = conn.execute(
        """SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c
           WHERE c.relnamespace = 'segmentation_bi'::regnamespace AND c.relkind = 'v' ORDER BY c.relname"""
    ).fetchall()
    for oid, name, comment in views:
        lines += ["", f"view {name} -- {comment}"]
        lines += [
            f"  {name}.{column}: {type_} -- {description}"
            for column, type_, description in conn.execute(
                """SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)
                   FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                (oid,),
            )
        ]
    functions = conn.execute(
        """SELECT p.oid, p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                  obj_description(p.oid, 'pg_proc'), t.typrelid
           FROM pg_proc p JOIN pg_type t ON t.oid = p.prorettype
           WHERE p.pronamespace = 'segmentation_bi'::regnamespace
           ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)"""
    ).fetchall()
    for _oid, name, arguments, result, comment, result_relation in functions:
        lines += ["", f"function {name}({arguments}) returns {result} -- {comment}"]
        lines += [
            f"  row.{column}: {type_}"
            for column, type_ in conn.execute(
                """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
                   WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                (result_relation,),
            )
        ]
    return "\n".join(lines) + "\n"


def test_what_bi_reads_matches_the_snapshot(conn):
    current = contract(conn)
    if os.environ.get(WRITE_ENV) == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    committed = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    if current != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                current.splitlines(keepends=True),
                "tests/data/bi_contract.txt (committed)",
                "the catalog (sql/bi/ applied)",
            )
        )
        pytest.fail(
            f"what BI reads is no longer tests/data/bi_contract.txt:\n{diff}\n"
            f"If the change is intended, regenerate the file with `{REGENERATE}` and commit it.",
            pytrace=False,
        )


def test_every_bi_object_is_defined_by_its_file(conn):
    names = {
        row[0]
        for row in conn.execute(
            # Types too, but not the row types of the views and their arrays.
            """SELECT relname FROM pg_class WHERE relnamespace = 'segmentation_bi'::regnamespace
               UNION SELECT proname FROM pg_proc WHERE pronamespace = 'segmentation_bi'::regnamespace
               UNION SELECT typname FROM pg_type WHERE typnamespace = 'segmentation_bi'::regnamespace
                 AND typrelid = 0 AND typcategory <> 'A'"""
        )
    }
    assert names == {d.name for d in bi_definitions.discover(migrations.SQL_DIR / "bi")}


def replay(conn, tmp_path, versions) -> None:
    """Empty the database, then upgrade it as each release in turn did (the numbered migrations up to
    each version, with sql/bi/ once there was one), and then with today's files."""
    conn.execute("DROP SCHEMA segmentation, segmentation_bi CASCADE")
    conn.execute("DROP TABLE public.customers")
    for version in versions:
        release = tmp_path / f"release_{version:03d}"
        release.mkdir()
        released = [v for v in BI_RELEASES if v <= version] if version < TODAYS_BI_SINCE else []
        bi_from = BI_RELEASES[max(released)] if released else None
        migrations.upgrade(conn, sql_copy(release, below=version + 1, bi=version >= BI_FILES_SINCE, bi_from=bi_from))
    migrations.upgrade(conn)
    assert migrations.pending(conn) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_database_upgraded_from_any_version_ends_with_the_fresh_contract(conn, tmp_path, version):
    fresh = bi_catalog(conn)  # the tests' template: a fresh database, migrated once with today's files
    replay(conn, tmp_path, [version])
    assert bi_catalog(conn) == fresh


def test_a_database_upgraded_at_every_release_ends_with_the_fresh_contract(conn, tmp_path):
    fresh = bi_catalog(conn)
    replay(conn, tmp_path, VERSIONS)
    assert bi_catalog(conn) == fresh
