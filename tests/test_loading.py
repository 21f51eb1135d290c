import pytest

from segmentation.errors import SegmentationError
from segmentation.loading import generate_customers, load_csv


def test_load_real_mall_file(conn, mall_csv):
    report = load_csv(conn, mall_csv)
    assert (report.loaded, report.inserted, report.updated) == (200, 200, 0)
    row = conn.execute(
        "SELECT customer_id, gender, age, annual_income, spending_score FROM customers WHERE customer_id = 1"
    ).fetchone()
    assert row == (1, "Male", 19, 15, 39)
    assert conn.execute("SELECT count(*), sum(annual_income) FROM customers").fetchone() == (200, 12112)


def test_reload_upserts_by_customer_id(conn, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("customer_id,gender,age,annual_income,spending_score\n1,Male,19,15,39\n2,Female,20,16,6\n")
    load_csv(conn, path)
    path.write_text("customer_id,gender,age,annual_income,spending_score\n2,Female,21,17.5,7\n3,Male,30,40,50\n")
    report = load_csv(conn, path)
    assert (report.inserted, report.updated) == (1, 1)
    rows = conn.execute("SELECT customer_id, age, annual_income FROM customers ORDER BY 1").fetchall()
    assert [(r[0], r[1], float(r[2])) for r in rows] == [(1, 19, 15.0), (2, 21, 17.5), (3, 30, 40.0)]


def test_a_gender_other_than_female_or_male_is_loaded_as_given(conn, tmp_path):
    """A CRM's customers with another gender, or none recorded, are customers: stored as
    the file gives them (an empty cell as NULL), and counted as unknown in the gender shares."""
    path = tmp_path / "crm.csv"
    path.write_text(
        "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)\n"
        "1,Non-binary,19,15,39\n2,,20,16,6\n3, U ,21,17,7\n4,F,22,18,8\n5,Male,23,19,9\n"
    )
    report = load_csv(conn, path)
    assert (report.loaded, report.inserted, report.problems) == (5, 5, [])
    rows = conn.execute("SELECT customer_id, gender FROM customers ORDER BY 1").fetchall()
    assert rows == [(1, "Non-binary"), (2, None), (3, "U"), (4, "F"), (5, "Male")]
    # Reloaded with a gender now recorded, and one now unknown: upserted like any column.
    path.write_text("customer_id,gender,age,annual_income,spending_score\n2,Female,20,16,6\n5,,23,19,9\n")
    assert load_csv(conn, path).updated == 2
    assert conn.execute("SELECT gender FROM customers WHERE customer_id IN (2, 5) ORDER BY customer_id").fetchall() == [
        ("Female",),
        (None,),
    ]


BAD = (
    "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)\n"
    "1,Male,19,15,39\n"
    "2,Female,200,16,6\n"
    "3,Female,20,16,\n"
    "4,Female,20,16,6\n"
)


def test_strict_mode_loads_nothing_and_reports_every_bad_row(conn, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD)
    with pytest.raises(SegmentationError) as info:
        load_csv(conn, path)
    message = str(info.value)
    assert "2 invalid rows, nothing loaded" in message
    assert "line 3: age 200 is outside 0-120" in message
    assert "line 4: spending_score is missing" in message
    assert "--skip-invalid" in message
    assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 0


def test_skip_invalid_loads_the_valid_rows_and_reports_the_rest(conn, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BAD)
    report = load_csv(conn, path, skip_invalid=True)
    assert report.loaded == 2
    assert [p.line for p in report.problems] == [3, 4]
    assert [r[0] for r in conn.execute("SELECT customer_id FROM customers ORDER BY 1")] == [1, 4]


def test_load_into_missing_table_names_it(conn, tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("customer_id,gender,age,annual_income,spending_score\n1,Male,19,15,39\n")
    with pytest.raises(SegmentationError, match="source table public.nosuch does not exist"):
        load_csv(conn, path, table="public.nosuch")


def test_generate_appends_after_the_highest_id(conn):
    generate_customers(conn, 1000, seed=3)
    generate_customers(conn, 500, seed=4, chunk_rows=128)
    count, low, high, genders = conn.execute(
        "SELECT count(*), min(customer_id), max(customer_id), array_agg(DISTINCT gender) FROM customers"
    ).fetchone()
    assert (count, low, high) == (1500, 1, 1500)
    assert sorted(genders) == ["Female", "Male"]
    bad = conn.execute(
        "SELECT count(*) FROM customers WHERE age NOT BETWEEN 0 AND 120 OR spending_score NOT BETWEEN 1 AND 100 "
        "OR annual_income < 0"
    ).fetchone()[0]
    assert bad == 0


def test_generate_reports_progress_at_a_human_pace(conn):
    found: list[str] = []
    generate_customers(conn, 2000, seed=3, chunk_rows=100, report=found.append)
    assert [line.split(" of ")[0] for line in found[:-1]] == [f"generate: {n:,}" for n in range(200, 2000, 200)]
    assert found[-1] == "generate: 2,000 customers made; writing them into public.customers"
