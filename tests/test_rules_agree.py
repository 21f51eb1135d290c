"""One rulebook, every form: a matrix of edge values goes through the CSV loader and through
the run's SQL (the valid-row filter and the quarantine's reasons), and both accept exactly
the same rows and name the same rule for the others. The loader checks what a run on the
default features checks, and keeps any gender; a run with gender as a feature quarantines
exactly the rows whose gender the rule (read in Python) does not recognise."""

from __future__ import annotations

import csv
import math
import re
from decimal import Decimal

import pytest
from psycopg import sql

from segmentation.core.features import DEFAULT_FEATURES, GENDER_FEMALE, GENDER_MALE, GENDER_UNKNOWN, gender_codes
from segmentation.core.rules import (
    CONTRACT,
    GENDER_CODES,
    GENDER_EXACT,
    ID_COLUMN,
    Check,
    GenderRule,
    IdRule,
    NumericRule,
    recognised_genders,
    rule_for,
)
from segmentation.flows.segmentation import customer_segmentation
from segmentation.identifiers import TableName
from segmentation.loading import load_csv
from segmentation.source import validity
from segmentation.source.catalog import Column, Source, resolve_source
from segmentation.source.queries import quarantine_copy_query
from segmentation.source.stream import stream_valid

BASE = {"gender": "Female", "age": "35", "annual_income": "50", "spending_score": "50"}
EDGES = {
    "gender": [
        "Female",
        "Male",
        "female",
        "MALE",
        " Female ",
        "  male",
        "FeMaLe",
        "",
        "other",
        "F",
        "m",
        " f ",
        "M",
        "Non-binary",
        "U",
        "1",
        "unknown",
        "Female\t",
        "fe male",
        "O'Brien",
        "back\\slash",
    ],
    "age": ["٣٥", "0", "120", "-1", "121", " 35 ", "+35", "", "35.5", "1e2", "NaN", "abc", "99999999999"],
    "annual_income": [
        "0",
        "-0",
        "0.0",
        "-0.5",
        "-0.0001",
        ".5",
        "5.",
        "1E3",
        " 15 ",
        "15.25",
        "1e15",
        "1000000000000000",
        "999999999999999.99",
        "1000000000000000.01",
        "1000000000000001",
        "-1e15",
        "1e308",
        "1e400",
        "-1e400",
        "1e-300",
        "1e-301",
        "-1e-400",
        "1e-320",
        "0E-20000",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "-Infinity",
        "",
        "abc",
        "1,5",
    ],
    "spending_score": ["1", "100", "0", "101", "-1", " 50 ", "", "50.0", "1e1"],
}
FEATURES = ["gender", "age", "annual_income", "spending_score"]


def matrix() -> list[dict]:
    """One row per edge value (the others at their base value), numbered by its line in the
    CSV file; then a missing id, an id that is not a number, and an id given twice."""
    rows = []
    for column, values in EDGES.items():
        for value in values:
            rows.append({**BASE, column: value})
    rows += [
        {**BASE, ID_COLUMN: ""},
        {**BASE, ID_COLUMN: "x7"},
        {**BASE, ID_COLUMN: "9999"},
        {**BASE, ID_COLUMN: "9999"},
    ]
    for line, row in enumerate(rows, start=2):
        row.setdefault(ID_COLUMN, str(line))
        row["line"] = line
    return rows


def check_of(message: str) -> tuple[str, Check] | str:
    """The (column, check) a reason names, read back through the rules' own messages; a
    CSV parse error (the cell is not of the column's type) is returned as it is."""
    slot = "\0"
    rules = [IdRule(), *CONTRACT.values()]
    for rule in rules:
        for check in Check:
            for missing in ("NULL", "missing"):
                try:
                    if isinstance(rule, IdRule):
                        templates = [
                            rule.message(check, slot, missing=missing, times=slot),
                            rule.message(check, slot, missing=missing, lines=slot),
                        ]
                    elif isinstance(rule, GenderRule):
                        templates = [
                            rule.message(check, slot, missing=missing),
                            rule.message(check, None, missing=missing),
                        ]
                    else:
                        templates = [rule.message(check, slot, missing=missing)]
                except ValueError:
                    continue
                for template in templates:
                    pattern = "^" + re.escape(template).replace(re.escape(slot), ".+") + "$"
                    if re.match(pattern, message, re.S):
                        return rule.column, check
    return message


def csv_verdicts(conn, tmp_path, rows) -> dict[int, object]:
    """line -> True (loaded) or the (column, check) of its reason, through load-csv."""
    path = tmp_path / "edges.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["CustomerID", "Genre", "Age", "Annual Income (k$)", "Spending Score (1-100)"])
        for row in rows:
            writer.writerow([row[ID_COLUMN], row["gender"], row["age"], row["annual_income"], row["spending_score"]])
    report = load_csv(conn, path, skip_invalid=True)
    verdicts: dict[int, object] = {p.line: check_of(p.reason) for p in report.problems}
    loaded = {r[0] for r in conn.execute("SELECT customer_id FROM public.customers")}
    for row in rows:
        if row["line"] not in verdicts:
            assert int(row[ID_COLUMN]) in loaded
            verdicts[row["line"]] = True
    assert report.loaded == len(loaded) == sum(v is True for v in verdicts.values())
    return verdicts


def edge_table(conn, rows) -> dict[int, object]:
    """The rows in public.edge, a table of the contract's types with no unique id (a repeated
    id reaches the rules); line -> "type" for each row a value of which cannot be stored in
    its column's type."""
    conn.execute(
        "CREATE TABLE raw_edge (line int, customer_id text, gender text, age text, annual_income text, spending_score text)"
    )
    with conn.cursor() as cur, cur.copy("COPY raw_edge FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row["line"], *(row[c] if row[c] != "" else None for c in (ID_COLUMN, *FEATURES))])
    # The contract's types, and no unique id: a repeated id reaches the rules.
    conn.execute(
        "CREATE TABLE edge (line int, customer_id bigint, gender text, age integer, annual_income numeric, spending_score integer)"
    )
    unstorable: dict[int, object] = {}
    for row in rows:
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO edge SELECT line, customer_id::bigint, gender, age::integer, annual_income::numeric, "
                    "spending_score::integer FROM raw_edge WHERE line = %s",
                    (row["line"],),
                )
        except Exception:  # noqa: BLE001 - any input error of the type is the verdict
            unstorable[row["line"]] = "type"
    return unstorable


def sql_verdicts(conn, rows, features, unstorable) -> dict[int, object]:
    """line -> True (a valid row of the run's SQL on these features), the (column, check) of
    its quarantine reason, or "type" (edge_table) when the row could not be stored."""
    source = resolve_source(conn, "public.edge", ID_COLUMN, features)
    assert not source.id_unique
    verdicts = dict(unstorable)
    line_of = dict(conn.execute("SELECT customer_id, line FROM edge WHERE customer_id IS NOT NULL"))
    with conn.transaction():
        valid = [int(i) for chunk in stream_valid(conn, source, 7) for i in chunk.ids]
        with conn.cursor() as cur, cur.copy(quarantine_copy_query(source, 1)) as copy:
            import json

            quarantined = [(json.loads(r[3])["line"], r[2]) for r in copy.rows()]
    for customer_id in valid:
        verdicts[line_of[customer_id]] = True
    for line, reason in quarantined:
        verdicts[line] = check_of(reason)
    assert len(verdicts) == len(rows)
    return verdicts


@pytest.mark.usefixtures("prefect_harness")
def test_csv_loader_and_run_sql_accept_the_same_rows_for_the_same_reasons(conn, tmp_path):
    rows = matrix()
    by_csv = csv_verdicts(conn, tmp_path, rows)
    unstorable = edge_table(conn, rows)
    by_sql = sql_verdicts(conn, rows, list(DEFAULT_FEATURES), unstorable)
    disagreements = []
    for row in rows:
        line, a, b = row["line"], by_csv[row["line"]], by_sql[row["line"]]
        cell = {k: v for k, v in row.items() if k != "line" and (k == ID_COLUMN or v != BASE.get(k))}
        if b == "type":
            # Not storable in the column's type (it never reaches the rules): the loader refuses it too.
            if a is True:
                disagreements.append((cell, a, b))
        elif a != b:
            disagreements.append((cell, a, b))
    assert disagreements == []
    accepted = sorted(line for line, v in by_csv.items() if v is True)
    assert len(accepted) == len([v for v in by_sql.values() if v is True]) >= 20
    # Spot checks that the matrix is what it claims: the bounds pass, just past them fails.
    line = {(c, r[c]): r["line"] for r in rows for c in FEATURES if r[c] != BASE[c]}
    assert by_csv[line[("annual_income", "1e15")]] is True
    assert by_csv[line[("annual_income", "1000000000000000.01")]] == ("annual_income", Check.ABSURD)
    assert by_csv[line[("annual_income", "1e308")]] == ("annual_income", Check.ABSURD)
    assert by_csv[line[("annual_income", "inf")]] == ("annual_income", Check.NOT_FINITE)
    assert by_csv[line[("age", "121")]] == ("age", Check.OUTSIDE)
    assert [by_csv[line[("gender", g)]] for g in ("other", "", "Non-binary", "Female\t")] == [True] * 4

    # Gender as a feature: the SQL quarantines exactly the rows whose gender GenderRule fails
    # (as Python reads it), and agrees with the default features on every other row.
    gender = GenderRule()
    on_gender = sql_verdicts(conn, rows, FEATURES, unstorable)
    expected = {
        row["line"]: ("gender", Check.NOT_A_GENDER)
        if by_sql[row["line"]] is True and gender.failure(row["gender"] or None)
        else by_sql[row["line"]]
        for row in rows
    }
    assert on_gender == expected
    spellings = ("other", "", "Non-binary", "1", "Female\t", " Female ", "F", " f ", "m", "FeMaLe")
    assert [on_gender[line[("gender", g)]] is True for g in spellings] == [False] * 5 + [True] * 5

    # Every customer the loader accepted is segmented on the default features, none
    # quarantined; on gender too, but for those whose gender is not recognised.
    unrecognised = {
        int(r[ID_COLUMN]) for r in rows if by_csv[r["line"]] is True and gender.failure(r["gender"] or None)
    }
    assert len(unrecognised) >= 8
    lax = {"n_clusters": 2, "min_silhouette": -1, "min_segment_share": 0, "max_quarantined_share": 1}
    for features, quarantined in ((None, set()), (FEATURES, unrecognised)):
        params = {"features": features} if features else {}
        state = customer_segmentation(**lax, **params, return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        assert (result["n_customers"], result["n_quarantined"]) == (len(accepted) - len(quarantined), len(quarantined))
        ids = conn.execute("SELECT customer_id FROM segmentation.quarantine WHERE run_id = %s", (result["run_id"],))
        assert {i for (i,) in ids} == quarantined


@pytest.mark.unit
def test_sql_and_python_read_gender_through_the_one_mapping():
    """The spellings SQL tests first, and those it tests after lower(btrim()), are GENDER_CODES's,
    each with the code Python gives it."""
    assert GENDER_CODES == {"female": GENDER_FEMALE, "f": GENDER_FEMALE, "male": GENDER_MALE, "m": GENDER_MALE}
    assert GENDER_EXACT == {"Female": GENDER_FEMALE, "F": GENDER_FEMALE, "Male": GENDER_MALE, "M": GENDER_MALE}
    spellings = {**GENDER_EXACT, **GENDER_CODES}
    assert gender_codes(spellings).tolist() == list(spellings.values())
    code = validity.gender_code(sql.Identifier("g"), sql.Literal(GENDER_UNKNOWN)).as_string()
    assert [s for s, c in spellings.items() if f"WHEN '{s}' THEN {c}" not in code] == []
    assert recognised_genders() == "Female, F, Male or M"


@pytest.mark.unit
def test_every_contract_column_has_one_rule_and_every_check_one_message():
    assert isinstance(CONTRACT["gender"], GenderRule)
    numeric = [r for r in CONTRACT.values() if isinstance(r, NumericRule)]
    assert [(r.column, r.low, r.high, r.whole) for r in numeric] == [
        ("age", 0, 120, True),
        ("annual_income", 0, None, False),
        ("spending_score", 1, 100, True),
    ]
    for rule in numeric:
        for check in (Check.MISSING, Check.NOT_FINITE, Check.ABSURD, Check.OUTSIDE):
            assert check_of(rule.message(check, "7", missing="NULL")) == (rule.column, check)


@pytest.mark.unit
def test_a_column_outside_the_contract_has_every_check_but_a_range():
    rule = rule_for("recency_days")
    assert rule == NumericRule("recency_days") and not rule.bounded and rule.describe_range() == "unbounded"
    messages = {
        check: rule.message(check, "7", missing="NULL")
        for check in (Check.MISSING, Check.NOT_FINITE, Check.ABSURD, Check.TINY)
    }
    assert messages == {
        Check.MISSING: "recency_days is NULL",
        Check.NOT_FINITE: "recency_days is 7",
        Check.ABSURD: "recency_days 7 is absurdly large",
        Check.TINY: "recency_days 7 is absurdly small (closer to 0 than 1e-300)",
    }
    # No range, so no value fails one: asking for its message is a mistake, said as such.
    with pytest.raises(ValueError, match="^recency_days has no declared range, so no value is outside it$"):
        rule.message(Check.OUTSIDE, "7", missing="NULL")
    failing = {
        Check.MISSING: [None],
        Check.NOT_FINITE: [math.nan, -math.inf, Decimal("NaN")],
        Check.ABSURD: [1e16, -(10**16)],
        Check.TINY: [Decimal("1e-400"), 1e-320],
    }
    assert {check: [rule.failure(v) for v in values] for check, values in failing.items()} == {
        check: [check] * len(values) for check, values in failing.items()
    }
    # Anything else passes, negative or far from the Mall columns' ranges.
    assert [rule.failure(v) for v in (0, -5, -1e15, 1e15, Decimal("1e-300"), 2**31)] == [None] * 6

    # The SQL compiled from it (where the missing range used to be formatted): the same checks.
    columns = {
        name: Column(name, typname, typname, "N") for name, typname in (("recency_days", "numeric"), ("visits", "int4"))
    }
    source = Source(TableName("public", "activity"), ID_COLUMN, ("recency_days", "visits"), columns, True, False)
    reasons = validity.reason(source).as_string()
    assert [m for m in messages.values() if m.replace("7", "%s") not in reasons] == []
    assert "outside" not in reasons and '"visits" IS NULL' in reasons and '"visits" <' not in reasons


def test_sql_reasons_show_values_as_the_rules_say(conn):
    conn.execute("CREATE TABLE odd (customer_id bigint, gender text, annual_income numeric)")
    conn.execute("INSERT INTO odd VALUES (1, 'O''Brien', 5), (2, 'Male', -2), (2, 'Male', 5)")
    source = resolve_source(conn, "public.odd", ID_COLUMN, ["gender", "annual_income"])
    with conn.transaction(), conn.cursor() as cur, cur.copy(quarantine_copy_query(source, 1)) as copy:
        reasons = sorted(r[2] for r in copy.rows())
    assert reasons == ["customer_id 2 appears 2 times in the source"] * 2 + ["gender 'O''Brien' is not Female or Male"]
    conn.execute(sql.SQL("DROP TABLE odd"))
