"""Table and column names typed by users, parsed the way PostgreSQL reads them. Callers
check them against the catalog; they reach SQL only through psycopg.sql.Identifier."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from segmentation.errors import SegmentationError

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


def _parse_name(text: str, what: str) -> str:
    match = re.fullmatch(rf"\s*({_PART})\s*", text or "")
    if not match:
        raise SegmentationError(
            f'{text!r} is not a valid {what} name; use letters, digits and underscores, or a "double-quoted" name'
        )
    return _unquote(match.group(1))


def parse_column_name(text: str) -> str:
    return _parse_name(text, "column")


def parse_schema_name(text: str) -> str:
    return _parse_name(text, "schema")
