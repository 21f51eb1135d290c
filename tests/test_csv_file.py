from pathlib import Path

import pytest

from segmentation.core.csv_file import read_csv, validate
from segmentation.errors import SegmentationError

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "header",
    [
        "CustomerID,Genre,Age,Annual Income (k$),Spending Score (1-100)",
        "CustomerID,Gender,Age,Annual Income (k$),Spending Score (1-100)",
        "customer_id,gender,age,annual_income,spending_score",
    ],
)
def test_header_variants_are_accepted(tmp_path, header):
    frame = read_csv(write(tmp_path, f"{header}\n0001,Male,19,15,39\n"))
    valid, problems = validate(frame)
    assert problems == []
    assert valid.to_dict("records") == [
        {"customer_id": 1, "gender": "Male", "age": 19, "annual_income": 15.0, "spending_score": 39}
    ]


def test_unknown_header_names_what_is_missing(tmp_path):
    with pytest.raises(SegmentationError, match="lacks age, spending_score"):
        read_csv(write(tmp_path, "CustomerID,Genre,Years,Annual Income (k$),Score\n1,Male,19,15,39\n"))


def test_every_bad_row_is_reported_with_line_and_reason(tmp_path):
    text = "\n".join(
        [
            "CustomerID,Genre,Age,Annual Income (k$),Spending Score (1-100)",
            "1,Male,19,15,39",  # line 2: fine
            "2,Female,,15,39",  # 3: missing age
            "3,Female,abc,15,39",  # 4: non-numeric age
            "4,Female,121,15,39",  # 5: age out of range
            "5,Female,30,-1,39",  # 6: negative income
            "6,Female,30,15,0",  # 7: spending out of range
            "7,Female,30,15,101",  # 8
            "1,Male,20,16,40",  # 9: repeated id
            "x,Male,20,16,40",  # 10: bad id
            "10,,20,16,40",  # 11: missing gender: kept, as NULL
            "11,Male,20.5,16,40",  # 12: fractional age
        ]
    )
    valid, problems = validate(read_csv(write(tmp_path, text)))
    assert [str(p) for p in problems] == [
        "line 2: customer_id 1 is repeated (also on line 9)",
        "line 3: age is missing",
        "line 4: age 'abc' is not a whole number",
        "line 5: age 121 is outside 0-120",
        "line 6: annual_income -1 is outside at least 0",
        "line 7: spending_score 0 is outside 1-100",
        "line 8: spending_score 101 is outside 1-100",
        "line 9: customer_id 1 is repeated (also on line 2)",
        "line 10: customer_id 'x' is not a whole number",
        "line 12: age '20.5' is not a whole number",
    ]
    assert valid[["customer_id", "gender"]].to_dict("records") == [{"customer_id": 10, "gender": None}]


def test_any_gender_is_kept_as_given_and_an_empty_one_as_null(tmp_path):
    """Gender is a rule only for a run that clusters on it: the loader stores it, spaces
    trimmed as the rule trims them."""
    genders = ["Non-binary", " U ", "", "F", "m", "1", "  ", "Female\t", "O'Brien"]
    lines = [f"{i},{g},30,15,39" for i, g in enumerate(genders, start=1)]
    valid, problems = validate(
        read_csv(write(tmp_path, "\n".join(["customer_id,gender,age,annual_income,spending_score", *lines])))
    )
    assert problems == []
    assert valid["gender"].tolist() == ["Non-binary", "U", None, "F", "m", "1", None, "Female\t", "O'Brien"]


def test_real_mall_file_is_all_valid(mall_csv):
    valid, problems = validate(read_csv(mall_csv))
    assert problems == []
    assert len(valid) == 200
    assert valid["customer_id"].is_unique
    assert set(valid["gender"]) == {"Male", "Female"}
    assert valid["annual_income"].sum() == 12112


def test_large_ids_are_exact_or_refused(tmp_path):
    text = (
        "customer_id,gender,age,annual_income,spending_score\n"
        "9007199254740993,Male,19,15,39\n"  # 2**53 + 1: float64 would round it
        "99999999999999999999,Male,19,15,39\n"
    )
    valid, problems = validate(read_csv(write(tmp_path, text)))
    assert valid["customer_id"].tolist() == [9007199254740993]
    assert [str(p) for p in problems] == ["line 3: customer_id 99999999999999999999 is outside the bigint range"]


def test_a_directory_is_not_a_csv_file(tmp_path):
    with pytest.raises(SegmentationError, match="cannot read .*: Is a directory"):
        read_csv(tmp_path)
