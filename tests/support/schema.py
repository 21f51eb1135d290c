"""The schema as files and as the catalog has it: a copy of sql/ to upgrade with, and what
segmentation_bi holds (for the migration and BI contract tests)."""

from __future__ import annotations

from pathlib import Path

from segmentation import bi_definitions, migrations


def sql_copy(directory: Path, *, below: int | None = None, bi: bool = True, bi_from: Path | None = None) -> Path:
    """A copy of sql/ to upgrade with (migrations.upgrade(conn, directory)) and edit: the numbered
    migrations (those below a version only, when given) and, unless bi is False, sql/bi/ (or
    the BI files of an earlier release, from bi_from)."""
    for migration in migrations.discover():
        if below is None or migration.version < below:
            (directory / migration.path.name).write_bytes(migration.path.read_bytes())
    if bi and bi_from is not None:
        (directory / "bi").mkdir()
        for path in bi_from.glob("*.sql"):
            (directory / "bi" / path.name).write_bytes(path.read_bytes())
    elif bi:
        (directory / "bi").mkdir()
        for definition in bi_definitions.discover(migrations.SQL_DIR / "bi"):
            (directory / "bi" / definition.path.name).write_bytes(definition.path.read_bytes())
    return directory


def bi_catalog(conn) -> dict:
    """Everything segmentation_bi holds, as the catalog has it: each view's definition, columns
    (in order, with types) and comments; each function's definition and comment; who owns each
    and its grants (aclitems, sorted)."""
    views = {
        name: {
            "definition": definition,
            "comment": comment,
            "owner": owner,
            "grants": grants,
            "columns": [
                tuple(column)
                for column in conn.execute(
                    """SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum)
                       FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
                    (oid,),
                )
            ],
        }
        for oid, name, definition, comment, owner, grants in conn.execute(
            """SELECT c.oid, c.relname, pg_get_viewdef(c.oid), obj_description(c.oid, 'pg_class'),
                      pg_get_userbyid(c.relowner), ARRAY(SELECT a::text FROM unnest(c.relacl) AS a ORDER BY 1)
               FROM pg_class c WHERE c.relnamespace = 'segmentation_bi'::regnamespace AND c.relkind = 'v'"""
        ).fetchall()
    }
    functions = {
        signature: {"definition": definition, "comment": comment, "owner": owner, "grants": grants}
        for signature, definition, comment, owner, grants in conn.execute(
            """SELECT format('%s(%s)', p.proname, pg_get_function_identity_arguments(p.oid)), pg_get_functiondef(p.oid),
                      obj_description(p.oid, 'pg_proc'), pg_get_userbyid(p.proowner),
                      ARRAY(SELECT a::text FROM unnest(p.proacl) AS a ORDER BY 1)
               FROM pg_proc p WHERE p.pronamespace = 'segmentation_bi'::regnamespace"""
        )
    }
    return {"views": views, "functions": functions}
