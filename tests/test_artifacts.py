"""The run report: artifacts read back through the Prefect client, the picture as a real PNG,
and `segmentation show --plot`."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from segmentation.cli import main
from segmentation.core import plots
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import load_csv
from segmentation.store import readback
from segmentation.tasks.report import K_SELECTION_KEY, PLOT_KEY, SUMMARY_KEY
from support.artifacts import artifacts_of, decode_png, picture_size, png_size
from support.data import insert_customers


def markdown_table(markdown: str) -> list[list[str]]:
    # Split on the cell borders, not on pipes escaped inside a cell.
    rows = [re.split(r"(?<!\\)\|", line[1:-1]) for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows if not set(row[0]) <= {"-"}]


@pytest.mark.usefixtures("prefect_harness")
def test_mall_run_reports_summary_k_table_and_picture(conn, mall_csv):
    load_csv(conn, mall_csv)
    state = customer_segmentation(features=["annual_income", "spending_score"], k_max=8, return_state=True)
    assert state.is_completed()
    run_id = state.result()["run_id"]
    found = artifacts_of(state.state_details.flow_run_id)
    assert set(found) == {SUMMARY_KEY, K_SELECTION_KEY, PLOT_KEY}
    assert (found[SUMMARY_KEY].type, found[K_SELECTION_KEY].type, found[PLOT_KEY].type) == (
        "markdown",
        "table",
        "image",
    )

    summary = found[SUMMARY_KEY].data
    assert f"# Segmentation run {run_id}: published" in summary
    assert "- **k**: 5" in summary and "- **customers segmented**: 200" in summary
    assert "- **quarantined**: 0" in summary
    silhouette = conn.execute("SELECT silhouette FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    assert f"- **silhouette**: {silhouette:.3f}" in summary
    header, *rows = markdown_table(summary)
    # Columns the segments table may gain (a name, say) come between the id and the figures.
    assert header[0] == "segment" and header[-5:] == ["customers", "share", "female", "annual_income", "spending_score"]
    by_centroid = {(float(r[-2]), float(r[-1])): (int(r[-5]), r[-4]) for r in rows}
    assert by_centroid == {
        (55.3, 49.5): (81, "40.5%"),
        (86.5, 82.1): (39, "19.5%"),
        (25.7, 79.4): (22, "11.0%"),
        (88.2, 17.1): (35, "17.5%"),
        (26.3, 20.9): (23, "11.5%"),
    }
    # Female shares are the database's, per segment.
    female = dict(
        conn.execute(
            "SELECT segment_id, share_female FROM segmentation.segments WHERE run_id = %s", (run_id,)
        ).fetchall()
    )
    assert {int(r[0]): r[-3] for r in rows} == {s: f"{100 * v:.1f}%" for s, v in female.items()}

    table = json.loads(found[K_SELECTION_KEY].data)
    stored = conn.execute(
        "SELECT k, inertia, silhouette FROM segmentation.k_selection WHERE run_id = %s ORDER BY k", (run_id,)
    ).fetchall()
    assert [r["k"] for r in table] == [r[0] for r in stored] == list(range(2, 9))
    assert [r["inertia"] for r in table] == [round(r[1], 2) for r in stored]
    assert [r["silhouette"] for r in table] == [round(r[2], 4) for r in stored]
    assert [r["k"] for r in table if r["chosen"]] == [5]

    width, height = png_size(decode_png(found[PLOT_KEY].data))
    assert (width, height) == picture_size(5)


@pytest.mark.unit
def test_most_separating_features_are_the_ones_the_segments_split():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], 100)
    noise = rng.normal(0, 1, 300)
    split_well = labels * 10 + rng.normal(0, 1, 300)
    split_a_bit = labels * 1.0 + rng.normal(0, 1, 300)
    X = np.column_stack([noise, split_a_bit, split_well])
    scores = plots.separation(X, labels)
    assert scores[2] > 0.95 and 0.2 < scores[1] < 0.6 and scores[0] < 0.05
    assert plots.most_separating(X, labels, ["noise", "a_bit", "well"]) == [2, 1]
    assert plots.most_separating(X[:, :1], labels, ["noise"]) == [0]


@pytest.mark.unit
def test_picture_with_one_feature_and_a_fixed_k_still_renders():
    X = np.array([[1.0], [2.0], [10.0], [11.0]])
    png = plots.render(
        X,
        np.array([1, 1, 2, 2]),
        ["spend"],
        pd.DataFrame({"spend": [1.5, 10.5]}, index=[1, 2]),
        plots.KCurve(np.array([2]), np.array([1.0]), np.array([np.nan]), 2),
        "one feature",
    )
    # The legend under the plots: two segments of one line, and room for the outliers' entry.
    assert png_size(png) == (1200, int((4.8 + 3 * plots.LEGEND_LINE + 0.15) * plots.DPI))


@pytest.mark.unit
def test_picture_with_only_categories_still_renders():
    png = plots.render(
        np.empty((0, 0)),
        np.array([], dtype=int),
        [],
        pd.DataFrame({"plan": ["pro 80%", "free 90%"]}, index=[1, 2]),
        plots.KCurve(np.array([2]), np.array([1.0]), np.array([0.4]), 2),
        "categories only",
    )
    assert png_size(png) == (1200, 480)


@pytest.mark.usefixtures("prefect_harness")
def test_show_plot_writes_the_picture_of_the_current_run(conn, tmp_path, capsys):
    insert_customers(
        conn,
        [
            (i, "Female" if i % 3 else "Male", 20 + i % 40, 15 + (i % 2) * 60 + i % 7, 10 + (i % 2) * 70 + i % 5)
            for i in range(1, 121)
        ],
    )
    assert customer_segmentation(
        n_clusters=2, features=["gender", "age", "annual_income"], return_state=True
    ).is_completed()
    path = tmp_path / "segments.png"
    assert main(["show", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "120 customers in 2 segments" in out
    assert png_size(path.read_bytes()) == picture_size(2)
    assert main(["show", "--plot", str(tmp_path / "missing-dir" / "x.png")]) == 1
    assert "error: cannot write" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_harness")
def test_report_shows_columns_the_segments_table_gains(conn):
    insert_customers(conn, [(i, "Female", 30 + i % 3, 20 + (i % 2) * 60, 50) for i in range(1, 41)])
    state = customer_segmentation(n_clusters=2, features=["age", "annual_income"], return_state=True)
    run_id = state.result()["run_id"]
    conn.execute("ALTER TABLE segmentation.segments ADD COLUMN IF NOT EXISTS segment_name text")
    conn.execute(
        "UPDATE segmentation.segments SET segment_name = CASE segment_id WHEN 1 THEN 'Thrifty | low' ELSE NULL END WHERE run_id = %s",
        (run_id,),
    )
    found = readback.load(conn, run_id)
    header, *rows = markdown_table(found.markdown())
    assert header == ["segment", "segment name", "customers", "share", "female", "age", "annual_income"]
    assert [r[:4] for r in rows] == [["1", "Thrifty \\| low", "20", "50.0%"], ["2", "", "20", "50.0%"]]
    # Each segment's description goes under its name in the picture's legend.
    assert found._legend() == {
        1: "1: Thrifty | low (50.0%)\nIncome 20.0 (average 50.0)",
        2: "segment 2 (50.0%)\nIncome about 1.6 times the average (80.0)",
    }
    assert png_size(found.png()) == picture_size(2)


@pytest.mark.usefixtures("prefect_harness")
def test_a_report_that_cannot_be_made_is_a_warning_not_a_failed_run(database_url, monkeypatch, caplog):
    from prefect import flow

    from segmentation.tasks.report import report

    @flow
    def report_only(run_id: int) -> list:
        return report(run_id)

    assert report_only(12345) == []
    assert "report: run 12345 is not in segmentation.runs" in caplog.text
    monkeypatch.setenv("SEGMENTATION_DATABASE_URL", "postgresql://postgres:s3cret@127.0.0.1:1/nowhere")
    state = report_only(1, return_state=True)
    assert state.is_completed() and state.result() == []
    assert "report: could not report run 1: SegmentationError: cannot connect to PostgreSQL" in caplog.text
    assert "s3cret" not in caplog.text
