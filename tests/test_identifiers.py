"""Names from parameters reach SQL only after parsing and catalog checks, always quoted."""

import pytest

from segmentation.errors import SegmentationError
from segmentation.identifiers import TableName, parse_column_name, parse_table_name
from segmentation.source.catalog import resolve_source


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, expected",
    [
        ("customers", TableName(None, "customers")),
        ("Public.Customers", TableName("public", "customers")),
        ('"Retail"."Shop ""A"""', TableName("Retail", 'Shop "A"')),
        (" crm . people ", TableName("crm", "people")),
    ],
)
def test_table_names_parse_like_postgresql(text, expected):
    assert parse_table_name(text) == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    "payload",
    ["customers; DROP TABLE x", "customers--", "a.b.c", "cust'omers", "customers /* x */", "", '"unterminated'],
)
def test_malformed_table_names_are_refused(payload):
    with pytest.raises(SegmentationError, match="is not a valid table name"):
        parse_table_name(payload)


@pytest.mark.unit
def test_malformed_column_names_are_refused():
    with pytest.raises(SegmentationError, match="is not a valid column name"):
        parse_column_name("age) FROM x; --")


def test_quoted_payloads_are_just_names_that_do_not_exist(conn):
    conn.execute("CREATE TABLE public.victim (x int)")
    for payload in ['"customers; DROP TABLE public.victim"', '"x"" ; DROP TABLE public.victim; --"']:
        with pytest.raises(SegmentationError, match="does not exist"):
            resolve_source(conn, payload, "customer_id", ["age"])
        with pytest.raises(SegmentationError, match="does not exist in public.customers"):
            resolve_source(conn, "public.customers", "customer_id", [payload])
    assert conn.execute("SELECT to_regclass('public.victim') IS NOT NULL").fetchone()[0]
