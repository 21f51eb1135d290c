"""docs/crm.md as a reader follows it: every command and query of the page, as written, on a fresh
database, with what each gives checked against the data computed straight from crm.* tables."""

from __future__ import annotations

import re
import shlex

from segmentation.cli import main
from support.docs import DOCS, documented_sql

PAGE = "crm.md"


def _commands() -> list[list[str]]:
    """The page's shell commands, continuation lines joined, without the program's path."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (DOCS / PAGE).read_text(), re.M | re.S)
    commands = []
    for block in blocks:
        words = shlex.split(block.replace("\\\n", " "))
        assert words[0] == ".venv/bin/segmentation"
        commands.append(words[1:])
    return commands


def test_the_crm_walkthrough_runs_as_written_and_gives_what_it_says(conn, capsys):
    generate, run = _commands()
    assert generate[:3] == ["generate", "--shape", "crm"]
    assert main(generate) == 0
    assert main(run) == 0
    printed = capsys.readouterr().out
    assert "Never ordered" in printed

    customers = conn.execute("SELECT count(*) FROM crm.customers").fetchone()[0]
    never = conn.execute(
        "SELECT count(*) FROM crm.customers c WHERE NOT EXISTS (SELECT FROM crm.orders o WHERE o.customer_id = c.id)"
    ).fetchone()[0]
    assert customers == 20000 and 0.25 < never / customers < 0.33

    sizes = conn.execute(documented_sql(PAGE, "Segment sizes")).fetchall()
    assert len(sizes) == 6  # k=5, and the missing-value segment
    assert sum(n for _, _, n, _, _ in sizes) == customers
    by_name = {name: n for _, name, n, _, _ in sizes}
    assert by_name["Never ordered"] == never
    assert len({d for *_, d in sizes}) == 6  # a distinct description each

    centroids = conn.execute(documented_sql(PAGE, "Centroids in the features' own units")).fetchall()
    # In the features' own units: recency in days (a log1p undone), each plan's share of a segment.
    recency = [float(v) for _, f, _, v in centroids if f == "recency_days" and v is not None]
    assert len(recency) == 5 and all(1 <= v <= 3 * 365 for v in recency)
    assert len(set(recency)) == 5
    plans = conn.execute("SELECT array_agg(DISTINCT plan) FROM crm.customers").fetchone()[0]
    shares = {}
    for segment, feature, level, value in centroids:
        if feature == "plan":
            assert level in plans
            shares[segment] = shares.get(segment, 0) + float(value)
    assert all(abs(total - 1) < 0.03 for total in shares.values()), shares

    export = conn.execute(documented_sql(PAGE, "A CRM export")).fetchall()
    assert len(export) == never and all(re.fullmatch(r"cus_\w+", i) for i, _, _ in export)
    assert {e for _, e, _ in export} == {
        e
        for (e,) in conn.execute(
            "SELECT email FROM crm.customers c WHERE NOT EXISTS (SELECT FROM crm.orders o WHERE o.customer_id = c.id)"
        )
    }

    new = conn.execute(documented_sql(PAGE, "Scoring a new customer")).fetchall()
    assert [name for _, name in new] == ["Never ordered"]

    assert conn.execute(documented_sql(PAGE, "Scoring agrees with the run")).fetchone() == (customers, customers)

    # The erasure the page names, with an id of these customers.
    victim = export[0][0]
    assert main(["purge", "--customer-id", victim]) == 0
    assert conn.execute(documented_sql(PAGE, "A CRM export")).fetchall() == export[1:]
