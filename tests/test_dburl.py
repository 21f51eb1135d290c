"""Database URLs in every form libpq accepts (segmentation.dburl): parsed by libpq's own parser,
checked, shown with the password masked on every host, and rewritten in the form given."""

from __future__ import annotations

import pytest

from segmentation import dburl
from segmentation.errors import SegmentationError
from segmentation.events import database_location
from segmentation.settings import DATABASE_URL_ENV, Settings, libpq_url

pytestmark = pytest.mark.unit

MULTI = "postgresql://u:pw@db1:5432,db2:5433/crm?target_session_attrs=read-write"
KEYWORDS = "host=db1,db2 port=5432,5433 dbname=crm user=u password=pw target_session_attrs=read-write"
SOCKET = "postgresql:///db?host=/var/run/postgresql"

# Each form: the URL, what libpq reads from it, how it is shown, its asset location.
FORMS = [
    (
        MULTI,
        {"user": "u", "password": "pw", "dbname": "crm", "host": "db1,db2", "port": "5432,5433"}
        | {"target_session_attrs": "read-write"},
        "postgresql://u:***@db1:5432,db2:5433/crm?target_session_attrs=read-write",
        "db1:5432,db2:5433/crm",
    ),
    (
        KEYWORDS,
        {"user": "u", "password": "pw", "dbname": "crm", "host": "db1,db2", "port": "5432,5433"}
        | {"target_session_attrs": "read-write"},
        "user=u password=*** dbname=crm host=db1,db2 port=5432,5433 target_session_attrs=read-write",
        "db1:5432,db2:5433/crm",
    ),
    (SOCKET, {"dbname": "db", "host": "/var/run/postgresql"}, SOCKET, "local:5432/db"),
    (
        "postgresql://seg:s3cret@db.example.com:6432/crm?sslmode=verify-full&connect_timeout=5",
        {"user": "seg", "password": "s3cret", "dbname": "crm", "host": "db.example.com", "port": "6432"}
        | {"sslmode": "verify-full", "connect_timeout": "5"},
        "postgresql://seg:***@db.example.com:6432/crm?connect_timeout=5&sslmode=verify-full",
        "db.example.com:6432/crm",
    ),
    (
        "postgresql+psycopg://seg:p%40ss%3Aw@127.0.0.1/db",
        {"user": "seg", "password": "p@ss:w", "dbname": "db", "host": "127.0.0.1"},
        "postgresql://seg:***@127.0.0.1/db",
        "127.0.0.1:5432/db",
    ),
    (
        "postgres://u:pw@[::1]:5433,db2/db",
        {"user": "u", "password": "pw", "dbname": "db", "host": "::1,db2", "port": "5433,"},
        "postgresql://u:***@[::1]:5433,db2/db",
        "[::1]:5433,db2:5432/db",
    ),
    (
        "postgresql://u:pw@/db?host=/run/pg,db2&port=5432,5433",
        {"user": "u", "password": "pw", "dbname": "db", "host": "/run/pg,db2", "port": "5432,5433"},
        "postgresql://u:***@/db?host=/run/pg,db2&port=5432,5433",
        "local:5432,db2:5433/db",
    ),
    (
        "host=/var/run/postgresql dbname=crm user=seg password='a b'",
        {"user": "seg", "password": "a b", "dbname": "crm", "host": "/var/run/postgresql"},
        "user=seg password=*** dbname=crm host=/var/run/postgresql",
        "local:5432/crm",
    ),
]


@pytest.mark.parametrize("url, params, shown, location", FORMS)
def test_every_form_is_read_checked_and_shown_masked(url, params, shown, location):
    assert dburl.parse(url) == params
    assert libpq_url(url) == url.replace("postgresql+psycopg://", "postgresql://")
    assert dburl.redact(url) == shown
    assert database_location(url) == location
    if "password" in params:
        assert params["password"] not in shown.replace("password=", "")


@pytest.mark.parametrize("url, params, shown, location", FORMS)
def test_rewriting_keeps_the_form_and_every_other_parameter(url, params, shown, location):
    rewritten = dburl.replace(url, dbname="other db", user="someone")
    assert dburl.is_url(rewritten) == dburl.is_url(url)
    assert dburl.parse(rewritten) == params | {"dbname": "other db", "user": "someone"}
    assert dburl.parse(dburl.replace(url)) == params
    spaced = dburl.replace(url, options="-c search_path=a,b", application_name="nightly run")
    assert dburl.parse(spaced) == params | {"options": "-c search_path=a,b", "application_name": "nightly run"}
    assert dburl.parse(dburl.replace(url, password=None)) == {k: v for k, v in params.items() if k != "password"}


def test_the_hosts_pair_with_their_ports():
    assert dburl.hosts(dburl.parse(MULTI)) == [("db1", "5432"), ("db2", "5433")]
    assert dburl.hosts(dburl.parse("postgresql://u@db1,db2:6000/x")) == [("db1", "5432"), ("db2", "6000")]
    assert dburl.hosts(dburl.parse("host=db1,db2 port=6000")) == [("db1", "6000"), ("db2", "6000")]
    assert dburl.hosts(dburl.parse("postgresql:///x")) == [("", "5432")]


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u:pw@h/db", "SEGMENTATION_DATABASE_URL points at mysql, but only PostgreSQL is supported"),
        ("sqlite:///x.db", "SEGMENTATION_DATABASE_URL points at sqlite, but only PostgreSQL is supported"),
        (
            "postgresql://seg:pw@127.0.0.1:5x432/db",
            "SEGMENTATION_DATABASE_URL is not a database URL (postgresql://seg:***@127.0.0.1:5x432/db: a port is not",
        ),
        (
            "host=db1,db2 port=5432,99999 password=pw",
            "SEGMENTATION_DATABASE_URL is not a database URL (password=*** host=db1,db2 port=5432,99999: a port",
        ),
        ("postgresql://seg:p@w@127.0.0.1/db", "SEGMENTATION_DATABASE_URL has an '@' after the password separator"),
        (
            "postgresql://u:pw@/db?host=a,b,c&port=1,2",
            "SEGMENTATION_DATABASE_URL lists 3 hosts but 2 ports (postgresql://u:***@/db?host=a,b,c&port=1,2)",
        ),
        (
            "postgresql://u:pw@h/db?no_such_thing=1",
            'SEGMENTATION_DATABASE_URL is not a database URL (<unparseable URL>: invalid URI query parameter: "no_such_thing")',
        ),
        ("nonsense password=pw", "SEGMENTATION_DATABASE_URL is not a database URL (<unparseable URL>: missing"),
    ],
)
def test_a_url_libpq_cannot_use_is_one_line_without_the_password(monkeypatch, url, message):
    with pytest.raises(SegmentationError) as raised:
        libpq_url(url)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert "pw" not in str(raised.value).replace("password", "")
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    with pytest.raises(SegmentationError, match="SEGMENTATION_DATABASE_URL"):
        Settings.from_env()


@pytest.mark.parametrize("url", [MULTI, KEYWORDS, SOCKET])
def test_settings_take_every_form(monkeypatch, url):
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    assert Settings.from_env().database_url == url


def test_an_unreadable_url_is_never_shown():
    assert dburl.redact("postgresql://u:secret@h/db?bogus=1") == "<unparseable URL>"


@pytest.mark.parametrize("url", [MULTI, KEYWORDS])
def test_the_embedded_commands_know_a_multi_host_url_is_not_theirs(monkeypatch, tmp_path, capsys, url):
    """The embedded server is used only when no URL is set: a multi-host or keyword/value one is
    a URL like any other (and `status` starts nothing)."""
    from segmentation.cli import main

    monkeypatch.setenv(DATABASE_URL_ENV, url)
    monkeypatch.setenv("SEGMENTATION_DATA_DIR", str(tmp_path / "home"))
    assert main(["embedded", "status"]) == 0
    note, status = capsys.readouterr().out.splitlines()
    assert note == "note: SEGMENTATION_DATABASE_URL is set, so commands use that database, not the embedded one"
    assert status.startswith("the embedded PostgreSQL is not running (no data yet at ")
