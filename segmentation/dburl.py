"""Database URLs: the one place they are parsed, checked, masked and rewritten.

Every form libpq accepts is accepted, because libpq's own parser reads them
(psycopg.conninfo.conninfo_to_dict, libpq's PQconninfoParse):

- a URL, `postgresql://user:password@host:5432/dbname?sslmode=require` (or `postgres://`, or
  SQLAlchemy's `postgresql+psycopg://`, whose driver part is dropped);
- a URL of several hosts, each with its port, for high availability:
  `postgresql://user:password@db1:5432,db2:5433/dbname?target_session_attrs=read-write`;
- a Unix-socket directory as the host: `postgresql:///dbname?host=/var/run/postgresql`;
- the keyword/value form: `host=db1,db2 port=5432,5433 dbname=crm user=u password=pw`.

One rule for showing them (`redact`): the password, wherever it is given, is shown as ***, and
the URL keeps the form it was given in. SQLAlchemy's make_url is not used: it reads neither
several hosts nor the keyword/value form."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from segmentation.errors import SegmentationError

MASK = "***"
URL_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_PORT = "5432"
EXAMPLE = "postgresql://user:password@host:5432/dbname (or host=... dbname=... user=...)"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DRIVER = re.compile(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://")


def libpq_form(url: str) -> str:
    """The URL as libpq takes it: SQLAlchemy's driver part (postgresql+psycopg://) dropped."""
    match = _DRIVER.match(url)
    return f"postgresql://{url[match.end() :]}" if match else url


def is_url(url: str) -> bool:
    """A URL (postgresql://...), not the keyword/value form."""
    return libpq_form(url).startswith(URL_SCHEMES)


def parse(url: str) -> dict[str, str]:
    """The connection parameters libpq reads from the URL (only those it gives). Raises
    psycopg.ProgrammingError when libpq cannot read it."""
    return {key: str(value) for key, value in conninfo_to_dict(libpq_form(url)).items()}


def hosts(params: Mapping[str, str]) -> list[tuple[str, str]]:
    """(host, port) of each host the parameters list, in order: a port for each host, or one
    port for them all (libpq's rule); an empty host is libpq's default (a local socket)."""
    names = params.get("host", params.get("hostaddr", "")).split(",")
    ports = params.get("port", "").split(",")
    if len(ports) == 1:
        ports = ports * len(names)
    return [(name, port or DEFAULT_PORT) for name, port in zip(names, ports, strict=False)]


def check(url: str, name: str) -> str:
    """The URL libpq is given (libpq_form), once it is known to be usable: a PostgreSQL URL of
    any form libpq accepts, with ports that are numbers. `name`: what the URL is called in the
    one-line error (an environment variable)."""
    scheme = _SCHEME.match(url)
    if scheme and not is_url(url):
        backend = scheme.group(1).split("+")[0]
        raise SegmentationError(f"{name} points at {backend}, but only PostgreSQL is supported; use the form {EXAMPLE}")
    try:
        params = parse(url)
    except psycopg.Error as exc:
        raise SegmentationError(
            f"{name} is not a database URL ({redact(url)}: {_reason(exc)}); use the form {EXAMPLE}"
        ) from None
    names = params.get("host", params.get("hostaddr", "")).split(",")
    if any("@" in host for host in names):
        raise SegmentationError(
            f"{name} has an '@' after the password separator; percent-encode special "
            "characters in the password (@ as %40, : as %3A, / as %2F)"
        )
    ports = params.get("port", "").split(",")
    if len(ports) not in (1, len(names)):
        raise SegmentationError(
            f"{name} lists {len(names)} hosts but {len(ports)} ports ({redact(url)}); give one port for "
            "every host, or one port for them all"
        )
    if any(port and not (port.isdigit() and 0 < int(port) < 65536) for port in ports):
        raise SegmentationError(
            f"{name} is not a database URL ({redact(url)}: a port is not a number from 1 to 65535); "
            f"use the form {EXAMPLE}"
        )
    return libpq_form(url)


def _reason(exc: psycopg.Error) -> str:
    """libpq's reason, without the text it quotes from the URL (which may hold the password)."""
    reason = " ".join(str(exc).split())
    return re.split(r' (?:after|in) "', reason)[0] or "unreadable"


def redact(url: str) -> str:
    """The URL with its password masked, safe for logs, errors and artifacts, in the form it
    was given in; every host and parameter shown."""
    try:
        params = parse(url)
    except psycopg.Error:
        return "<unparseable URL>"
    return render(params, as_url=is_url(url), mask=True)


def replace(url: str, **changes: str | None) -> str:
    """The URL with some parameters changed (libpq's names: dbname, user, password, host,
    port, ...; None removes one), in the form it was given in, the password kept."""
    params = parse(url)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return render(params, as_url=is_url(url), mask=False)


def render(params: Mapping[str, str], *, as_url: bool, mask: bool) -> str:
    """Connection parameters as a URL or in the keyword/value form; mask: the password as ***."""
    shown = {key: (MASK if key == "password" and mask else value) for key, value in params.items()}
    if not as_url:
        return make_conninfo("", **shown)
    user = shown.pop("user", "")
    password = shown.pop("password", None)
    dbname = shown.pop("dbname", "")
    userinfo = quote(user, safe="") + (f":{password if mask else quote(password, safe='')}" if password else "")
    netloc = ""
    names = shown.get("host", "").split(",")
    if "host" in shown and all(name and not name.startswith("/") for name in names):
        # Network hosts go in the authority, each with its port; socket directories and
        # empty hosts stay in the query, where libpq reads them too.
        ports = shown.get("port", "").split(",")
        if len(ports) == 1:
            ports = ports * len(names)
        if len(ports) == len(names):
            shown.pop("host")
            shown.pop("port", None)
            netloc = ",".join(
                (f"[{name}]" if ":" in name else name) + (f":{port}" if port else "")
                for name, port in zip(names, ports, strict=True)
            )
    authority = f"{userinfo}@{netloc}" if userinfo else netloc
    query = urlencode(shown, safe="/,:", quote_via=quote) if shown else ""
    return f"postgresql://{authority}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def location(url: str) -> str:
    """host:port/database of a URL, every host listed (host1:5432,host2:5433/crm): never the
    user or the password. A Unix socket directory stands as `local`."""
    params = parse(url)
    listed = ",".join(
        f"{'local' if not host or host.startswith('/') else f'[{host}]' if ':' in host else host}:{port}"
        for host, port in hosts(params)
    )
    return f"{listed}/{params.get('dbname') or ''}"
