"""Every SQL block of the documentation as a SQL-parsing BI tool reads it: Superset's SQL Lab and
virtual datasets parse queries with sqlglot before they run them. Each block must parse with
sqlglot's PostgreSQL dialect and come back unchanged in meaning (the same syntax tree after a
round trip, and no function read as something else, as sqlglot reads predict(...) as BigQuery's
ML.PREDICT). And segment_of, the name the docs use, is predict for the reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_queries() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in re.findall(r"^```sql\n(.*?)^```", page.read_text(), re.M | re.S):
            for statement in sqlglot.transpile(block, read="postgres", write="postgres", pretty=False):
                found.append((page.name, statement))
    return found


@pytest.mark.unit
def test_there_are_documented_queries_to_check():
    pages = {page for page, _ in documented_queries()}
    assert {"bi.md"} <= pages and len(documented_queries()) >= 8


@pytest.mark.unit
@pytest.mark.parametrize(("page", "query"), documented_queries(), ids=lambda v: v if len(v) < 40 else v[:40])
def test_a_documented_query_survives_a_sql_parsing_bi_tool(page, query):
    tree = sqlglot.parse_one(query, read="postgres")
    again = sqlglot.parse_one(tree.sql(dialect="postgres"), read="postgres")
    assert again == tree, f"docs/{page}: {query}"
    assert not list(tree.find_all(exp.Predict)), f"docs/{page}: predict(...) reads as ML.PREDICT: use segment_of"
    assert "MODEL" not in tree.sql(dialect="postgres").upper().split()


@pytest.mark.unit
def test_predict_itself_is_what_such_a_tool_breaks():
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse_one("SELECT * FROM segmentation_bi.predict(to_jsonb(c))", read="postgres")
    two = sqlglot.parse_one(
        "SELECT * FROM c CROSS JOIN LATERAL segmentation_bi.predict(to_jsonb(c), 3) p", read="postgres"
    )
    assert "MODEL" in two.sql(dialect="postgres")
