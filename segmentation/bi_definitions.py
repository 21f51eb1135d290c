"""The BI contract: the views and functions of the schema segmentation_bi, each defined by one
file in sql/bi/ named after it (current_run.sql defines segmentation_bi.current_run, predict.sql
both predict functions). The numbered migrations are their history; these files are what BI
reads today, and what a fresh database and an upgraded one both end with.

migrations.upgrade applies a file again, after the numbered migrations and in their transaction,
when its content differs from the one recorded in segmentation.bi_definitions or its object is
missing, and every file after any numbered migration: a migration that must drop a BI view (to
retype a column under it, say) drops it, CASCADE if need be, and leaves the rest to the files.
Files naming segmentation_bi.<other> are applied after <other>.sql. A file is applied as written
(CREATE OR REPLACE); when PostgreSQL refuses that (a view's column removed, renamed, moved or
retyped, a function's result type or argument names changed), its objects and the BI objects
depending on them are dropped and created again from their files. Whatever the upgrade created
again gets back the owner and grants it had before (access, restore), so segmentation_reader
keeps reading it whoever runs the upgrade, even a login that may not apply the roles file.
A file cannot say what to drop: removing a view, or a function's old signature, takes a numbered
migration that drops it (and deletes its row in segmentation.bi_definitions).

Several segmentations side by side (segmentation.segmentations): the files of the views each
segmentation has its own copy of (segmentations.VIEWS) define the default's, and are rendered for
every other segmentation in segmentation.segmentations with its own view names and its name in
place of the literal 'default' (Definition.render): one definition, however many segmentations.
Applying such a file applies every rendering of it; add_segmentation creates a new segmentation's.

Runs in its caller's transaction (migrations.upgrade owns it): never begins, commits or rolls
back, beyond the savepoint a refused CREATE OR REPLACE is undone to."""

from __future__ import annotations

import graphlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.abc import Traversable

import psycopg
from psycopg import sql

from segmentation.db import scalar
from segmentation.errors import SegmentationError
from segmentation.segmentations import CUSTOMER_VIEWS, DEFAULT, VIEWS, view_name
from segmentation.source import customer_keys
from segmentation.sql_files import SqlFile

log = logging.getLogger(__name__)

SCHEMA = "segmentation_bi"
_FILE = re.compile(r"^([a-z][a-z0-9_]*)\.sql$")
_REFERENCE = re.compile(rf"\b{SCHEMA}\s*\.\s*([a-z_][a-z0-9_]*)")
_LINE_COMMENT = re.compile(r"--[^\n]*")
# A file's view statement, up to its first line that ends a statement (its COMMENTs follow).
_VIEW_STATEMENT = re.compile(r"^CREATE OR REPLACE VIEW (\S+) AS\n(.*?);$", re.DOTALL | re.MULTILINE)
_VIEW_REFERENCE = re.compile(rf"\b{SCHEMA}\.({'|'.join(VIEWS)})(?![a-z0-9_])")


@dataclass(frozen=True)
class Definition(SqlFile):
    path: Traversable

    @property
    def name(self) -> str:
        """The object it defines, in segmentation_bi: a view, or every function of that name."""
        return self.path.name.removesuffix(".sql")

    @property
    def filename(self) -> str:
        return f"bi/{self.path.name}"

    def references(self) -> set[str]:
        """The other BI objects its SQL names (its comments aside)."""
        return set(_REFERENCE.findall(_LINE_COMMENT.sub("", self.text))) - {self.name}

    @property
    def per_segmentation(self) -> bool:
        """Whether each segmentation has its own copy of what it defines."""
        return self.name in VIEWS

    def render(self, segmentation: str) -> str:
        """Its SQL for a segmentation: as written for the default; for another, with that
        segmentation's view names and its name in place of the literal 'default'. The name is
        checked (segmentations.check_name) before it is ever stored, so it is a safe literal."""
        if segmentation == DEFAULT:
            return self.text
        text = _VIEW_REFERENCE.sub(lambda m: f"{SCHEMA}.{view_name(segmentation, m.group(1))}", self.text)
        return text.replace("'default'", f"'{segmentation}'")


@dataclass(frozen=True)
class Rendered:
    """A definition as applied for one segmentation: the object it makes and its SQL."""

    definition: Definition
    segmentation: str
    id_type: str | None = None  # the segmentation's ids, when keyed by hash (sql/018)

    @property
    def name(self) -> str:
        return (
            view_name(self.segmentation, self.definition.name)
            if self.definition.per_segmentation
            else self.definition.name
        )

    @property
    def text(self) -> str:
        return self.definition.render(self.segmentation)

    def sql(self, conn: psycopg.Connection) -> str:
        """What to execute: the text, or for a view of customers (segmentations.CUSTOMER_VIEWS) of
        a segmentation whose ids are keyed by hash, the text with the view's customer_id mapped
        back to the source's id, in its type, through segmentation.customer_ids. Its other columns
        are read from the database (the view's query with no rows), so one file defines both."""
        text = self.text
        if self.id_type is None or self.definition.name not in CUSTOMER_VIEWS:
            return text
        found = _VIEW_STATEMENT.search(text)
        if found is None:
            raise SegmentationError(f"{self.filename} does not begin its view with CREATE OR REPLACE VIEW ... AS")
        view, body = found.group(1), found.group(2)
        columns = [c.name for c in conn.execute(f"SELECT * FROM ({body}) AS keyed LIMIT 0").description or []]
        selected = sql.SQL(", ").join(
            sql.SQL("{} AS customer_id").format(customer_keys.as_source(sql.SQL("ids.customer_id"), self.id_type))
            if c == "customer_id"
            else sql.SQL("keyed.{}").format(sql.Identifier(c))
            for c in columns
        )
        wrapped = sql.SQL(
            "CREATE OR REPLACE VIEW {view} AS\nSELECT {selected}\nFROM ({body}) AS keyed\n"
            "JOIN segmentation.customer_ids AS ids\n  ON ids.segmentation = {segmentation} AND ids.customer_key = keyed.customer_id;"
        ).format(
            view=sql.SQL(view),
            selected=selected,
            body=sql.SQL(body),
            segmentation=sql.Literal(self.segmentation),
        )
        return wrapped.as_string(conn) + text[found.end() :]

    @property
    def filename(self) -> str:
        suffix = "" if self.segmentation == DEFAULT else f" for segmentation {self.segmentation}"
        return self.definition.filename + suffix


def segmentation_names(conn: psycopg.Connection) -> list[str]:
    """Every segmentation of this database, the default first (only it before sql/014)."""
    if not scalar(conn, "SELECT to_regclass('segmentation.segmentations') IS NOT NULL"):
        return [DEFAULT]
    others = [
        r[0]
        for r in conn.execute("SELECT name FROM segmentation.segmentations WHERE name <> %s ORDER BY name", (DEFAULT,))
    ]
    return [DEFAULT, *others]


def id_types(conn: psycopg.Connection) -> dict[str, str | None]:
    """The id type each segmentation's views speak (sql/018): None for integer ids, its own keys."""
    if not scalar(
        conn,
        """SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('segmentation.segmentations')
                          AND attname = 'id_type' AND NOT attisdropped)""",
    ):
        return {}
    return dict(conn.execute("SELECT name, id_type FROM segmentation.segmentations"))


def _targets(
    definitions: Sequence[Definition], names: Sequence[str], types: dict[str, str | None] | None = None
) -> list[Rendered]:
    """What the definitions make, in their order: a per-segmentation file once per segmentation."""
    types = types or {}
    return [
        Rendered(d, name, types.get(name) if d.per_segmentation else None)
        for d in definitions
        for name in (names if d.per_segmentation else [DEFAULT])
    ]


def discover(bi_dir: Traversable) -> list[Definition]:
    """The files of bi_dir, each after those it names; none when there is no such directory."""
    if not bi_dir.is_dir():
        return []
    found = {}
    for path in bi_dir.iterdir():
        if not (path.name.endswith(".sql") and path.is_file()):
            continue
        if _FILE.match(path.name) is None:
            raise SegmentationError(
                f"bi/{path.name} is not named like the view or function it defines (current_run.sql); rename it"
            )
        definition = Definition(path)
        found[definition.name] = definition
    order = graphlib.TopologicalSorter({name: d.references() & found.keys() for name, d in found.items()})
    try:
        order.prepare()
    except graphlib.CycleError as exc:
        raise SegmentationError(
            f"the files in sql/bi/ name each other in a circle ({' -> '.join(exc.args[1])}); one must not"
        ) from None
    ordered = []
    while order.is_active():
        ready = sorted(order.get_ready())  # sorted: the same order on every machine
        ordered += [found[name] for name in ready]
        order.done(*ready)
    return ordered


def outdated(conn: psycopg.Connection, definitions: Sequence[Definition], *, migrating: bool) -> list[Definition]:
    """Those an upgrade applies: every one when it applies numbered migrations too (they may have
    dropped or replaced any BI object); otherwise those changed since recorded, never recorded,
    or whose object is missing."""
    if migrating:
        return list(definitions)
    recorded: dict[str, str] = {}
    if scalar(conn, "SELECT to_regclass('segmentation.bi_definitions') IS NOT NULL"):
        recorded = dict(conn.execute("SELECT name, checksum FROM segmentation.bi_definitions"))
    present = {
        row[0]
        for row in conn.execute(
            """SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace(%(schema)s)
               UNION SELECT proname FROM pg_proc WHERE pronamespace = to_regnamespace(%(schema)s)""",
            {"schema": SCHEMA},
        )
    }
    missing = {t.definition.name for t in _targets(definitions, segmentation_names(conn)) if t.name not in present}
    return [d for d in definitions if recorded.get(d.name) != d.checksum or d.name in missing]


def apply(
    conn: psycopg.Connection,
    todo: Sequence[Definition],
    definitions: Sequence[Definition],
    only: str | None = None,
) -> list[Definition]:
    """Apply todo (in the order of definitions, each for every segmentation it has a copy for)
    and record it; returns every file applied, the unchanged ones created again because an object
    they depend on was dropped included."""
    targets = _targets(definitions, segmentation_names(conn), id_types(conn))
    done: list[Rendered] = []
    for target in targets:
        if target.definition not in todo or target in done or (only is not None and target.segmentation != only):
            continue
        log.info("applying %s", target.filename)
        try:
            with conn.transaction():  # a savepoint: what a refused file did is undone
                conn.execute(target.sql(conn))
            done.append(target)
        except (psycopg.errors.InvalidTableDefinition, psycopg.errors.InvalidFunctionDefinition) as exc:
            log.info("%s cannot replace what is there (%s): dropping and creating it", target.filename, exc)
            done += [t for t in _recreate(conn, target, targets) if t not in done]
    files = list(dict.fromkeys(t.definition for t in done))
    for definition in files:
        conn.execute(
            """INSERT INTO segmentation.bi_definitions (name, checksum) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()""",
            (definition.name, definition.checksum),
        )
    return files


def add_segmentation(conn: psycopg.Connection, segmentation: str, definitions: Sequence[Definition]) -> list[str]:
    """Create a new segmentation's own views from the files, each with the owner and the grants of
    the default's counterpart (so segmentation_reader reads them as it reads the default's);
    refused, in one line, when a view of that name exists already (another segmentation's, or not
    ours). Returns the views' names. Runs in the caller's transaction
    (segmentation.migrations.add_segmentation)."""
    targets = [t for t in _targets(definitions, [segmentation], id_types(conn)) if t.definition.per_segmentation]
    taken = [
        t.name
        for t in targets
        if scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(SCHEMA, t.name).as_string(conn),))
    ]
    if taken:
        raise SegmentationError(
            f"segmentation {segmentation}'s view {SCHEMA}.{taken[0]} exists already, as another segmentation's or "
            "as someone else's; choose another segmentation name"
        )
    default = {a.name: a for a in access(conn) if a.kind == "VIEW"}
    for target in targets:
        conn.execute(target.sql(conn))
        model = default.get(target.definition.name)
        if model is not None:
            _copy_access(conn, model, sql.Identifier(SCHEMA, target.name))
    return [t.name for t in targets]


def _copy_access(conn: psycopg.Connection, model: Access, view: sql.Identifier) -> None:
    """Give a view just created the owner and the grants of another, when this login may."""
    if not scalar(conn, "SELECT current_user = %s::name", (model.owner,)):
        if not scalar(
            conn,
            "SELECT rolsuper OR pg_has_role(current_user, %s, 'MEMBER') FROM pg_roles WHERE rolname = current_user",
            (model.owner,),
        ):
            return
        conn.execute(sql.SQL("ALTER VIEW {} OWNER TO {}").format(view, sql.Identifier(model.owner)))
    for grantee, privilege, grantable in model.grants or []:
        conn.execute(
            sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
                sql.SQL(privilege),
                view,
                sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        )


def _recreate(conn: psycopg.Connection, definition: Rendered, definitions: Sequence[Rendered]) -> list[Rendered]:
    """Drop the definition's objects and the BI objects depending on them, then apply their files."""
    dependents = {
        row[0]
        for row in conn.execute(
            # Views depend on what they read through their rewrite rule; functions with a
            # BEGIN ATOMIC body directly. Normal dependencies only: a view's own rule and row
            # type are its internal parts.
            """WITH RECURSIVE objects(classid, objid) AS (
                   SELECT 'pg_class'::regclass::oid, oid FROM pg_class
                   WHERE relnamespace = to_regnamespace(%(schema)s) AND relname = %(name)s
                   UNION
                   SELECT 'pg_proc'::regclass::oid, oid FROM pg_proc
                   WHERE pronamespace = to_regnamespace(%(schema)s) AND proname = %(name)s
                   UNION
                   SELECT CASE WHEN d.classid = 'pg_rewrite'::regclass THEN 'pg_class'::regclass::oid ELSE d.classid END,
                          CASE WHEN d.classid = 'pg_rewrite'::regclass THEN r.ev_class ELSE d.objid END
                   FROM objects o
                   JOIN pg_depend d ON d.refclassid = o.classid AND d.refobjid = o.objid AND d.deptype = 'n'
                   LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid)
               SELECT c.relname FROM objects o JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid
               WHERE c.relnamespace = to_regnamespace(%(schema)s)
               UNION
               SELECT p.proname FROM objects o JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
               WHERE p.pronamespace = to_regnamespace(%(schema)s)""",
            {"schema": SCHEMA, "name": definition.name},
        )
    }
    # In the order of the files: dropped from the last, applied from the first. An object with no
    # file of its own that depends on them stops the drop (RESTRICT): it is not ours to drop.
    chain = [d for d in definitions if d.name in dependents | {definition.name}]
    for each in reversed(chain):
        try:
            for statement in _drops(conn, each.name):
                conn.execute(statement)
        except psycopg.errors.DependentObjectsStillExist as exc:
            detail = " ".join((exc.diag.message_detail or "").split())
            raise SegmentationError(
                f"{definition.filename} changes {SCHEMA}.{definition.name} in a way that needs it dropped "
                f"and created, and something outside sql/bi/ depends on it ({detail}); drop that first, then "
                "upgrade again"
            ) from None
    for each in chain:
        conn.execute(each.sql(conn))
    return chain


def _drops(conn: psycopg.Connection, name: str) -> list[sql.Composed]:
    target = sql.Identifier(SCHEMA, name)
    drops = []
    functions = [
        sql.SQL("{}({})").format(target, sql.SQL(row[0]))
        for row in conn.execute(
            "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc "
            "WHERE pronamespace = to_regnamespace(%s) AND proname = %s",
            (SCHEMA, name),
        )
    ]
    if functions:  # in one statement: one overload may call another
        drops.append(sql.SQL("DROP FUNCTION {}").format(sql.SQL(", ").join(functions)))
    relkind = scalar(
        conn,
        "SELECT (SELECT relkind::text FROM pg_class WHERE relnamespace = to_regnamespace(%s) AND relname = %s)",
        (SCHEMA, name),
    )
    if relkind == "v":
        drops.append(sql.SQL("DROP VIEW {}").format(target))
    elif relkind is not None:
        raise SegmentationError(f"segmentation_bi.{name} is not a view, yet bi/{name}.sql defines one; drop it")
    return drops


@dataclass(frozen=True)
class Access:
    """Who owns an object of segmentation_bi and who may use it, as the catalog says."""

    kind: str  # VIEW or FUNCTION
    name: str
    arguments: str | None  # a function's identity arguments
    oid: int
    owner: str
    grants: list[tuple[str | None, str, bool]] | None  # (grantee, privilege, grantable); None: the defaults

    @property
    def target(self) -> sql.Composable:
        target = sql.Identifier(SCHEMA, self.name)
        return target if self.arguments is None else sql.SQL("{}({})").format(target, sql.SQL(self.arguments))


_ACCESS = """
SELECT o.kind, o.name, o.arguments, o.oid, pg_get_userbyid(o.owner),
       CASE WHEN o.acl IS NOT NULL THEN
           (SELECT coalesce(json_agg(json_build_array(CASE WHEN a.grantee <> 0 THEN pg_get_userbyid(a.grantee) END,
                                                      a.privilege_type, a.is_grantable)), '[]')
            FROM aclexplode(o.acl) AS a WHERE a.grantee <> o.owner)
       END
FROM (SELECT 'VIEW' AS kind, relname AS name, NULL AS arguments, oid, relowner AS owner, relacl AS acl
      FROM pg_class WHERE relnamespace = to_regnamespace(%(schema)s) AND relkind = 'v'
      UNION ALL
      SELECT 'FUNCTION', proname, pg_get_function_identity_arguments(oid), oid, proowner, proacl
      FROM pg_proc WHERE pronamespace = to_regnamespace(%(schema)s)) AS o
"""


def access(conn: psycopg.Connection) -> list[Access]:
    """The owner and grants of every view and function of segmentation_bi now, for restore()."""
    return [
        Access(kind, name, arguments, oid, owner, None if grants is None else [(g[0], g[1], g[2]) for g in grants])
        for kind, name, arguments, oid, owner, grants in conn.execute(_ACCESS, {"schema": SCHEMA})
    ]


def restore(conn: psycopg.Connection, before: Sequence[Access]) -> None:
    """Give each object created again since `before` (same name, new oid) its owner and grants
    back: DROP took them, and the roles file may be not ours to apply."""
    now = {(a.kind, a.name, a.arguments): a for a in access(conn)}
    for old in before:
        new = now.get((old.kind, old.name, old.arguments))
        if new is None or new.oid == old.oid:
            continue
        if new.owner != old.owner:
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(old.kind), old.target, sql.Identifier(old.owner))
            )
        if old.grants is None:
            continue
        kind = sql.SQL("TABLE" if old.kind == "VIEW" else old.kind)  # as GRANT names a view
        conn.execute(sql.SQL("REVOKE ALL ON {} {} FROM PUBLIC").format(kind, old.target))
        for grantee, privilege, grantable in old.grants:
            conn.execute(
                sql.SQL("GRANT {} ON {} {} TO {}{}").format(
                    sql.SQL(privilege),
                    kind,
                    old.target,
                    sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
