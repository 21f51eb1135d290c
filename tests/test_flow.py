"""The flow through Prefect, against a real database."""

import itertools

import numpy as np
import psycopg
import pytest

from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers, load_csv
from segmentation.store import readback
from segmentation.tasks.report import SUMMARY_KEY
from support.artifacts import artifacts_of
from support.data import insert_customers, keep_assignments
from support.docs import documented_sql

pytestmark = pytest.mark.usefixtures("prefect_harness")

MALL_CENTROIDS = {  # (annual_income, spending_score): size, from the classic analysis
    (55.3, 49.5): 81,
    (86.5, 82.1): 39,
    (25.7, 79.4): 22,
    (88.2, 17.1): 35,
    (26.3, 20.9): 23,
}


def run(**params):
    return customer_segmentation(**params, return_state=True)


def error_of(state) -> str:
    assert state.is_failed(), state
    assert "\n" not in state.message
    return state.message


def current_centroids(conn):
    rows = conn.execute(
        """SELECT s.n_customers, c.feature, c.centroid FROM segmentation_bi.current_segments s
           JOIN segmentation_bi.current_segment_centroids c USING (run_id, segment_id)"""
    ).fetchall()
    by_segment = {}
    for n, feature, centroid in rows:
        by_segment.setdefault(n, {})[feature] = centroid
    return by_segment


def assert_mall_segments(conn):
    found = {
        (round(c["annual_income"], 1), round(c["spending_score"], 1)): n for n, c in current_centroids(conn).items()
    }
    assert found == MALL_CENTROIDS


def assert_views_show_one_complete_run(conn, run_id):
    run = conn.execute("SELECT run_id, n_customers, k FROM segmentation_bi.current_run").fetchone()
    assert run[0] == run_id
    n_customers, k = run[1], run[2]
    assert conn.execute(
        "SELECT array_agg(DISTINCT run_id), count(*), count(DISTINCT customer_id) FROM segmentation_bi.current_customer_segments"
    ).fetchone() == ([run_id], n_customers, n_customers)
    assert conn.execute(
        "SELECT array_agg(DISTINCT run_id), count(*), sum(n_customers) FROM segmentation_bi.current_segments"
    ).fetchone() == ([run_id], k, n_customers)
    features = conn.execute("SELECT features FROM segmentation.runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    assert conn.execute(
        "SELECT array_agg(DISTINCT run_id), count(*) FROM segmentation_bi.current_segment_centroids"
    ).fetchone() == ([run_id], k * len(features))


def test_mall_customers_k5_gives_the_five_well_known_segments(conn, mall_csv):
    load_csv(conn, mall_csv)
    state = run(n_clusters=5, features=["annual_income", "spending_score"])
    assert state.is_completed()
    result = state.result()
    assert (result["k"], result["n_customers"], result["n_quarantined"]) == (5, 200, 0)
    assert_mall_segments(conn)
    assert_views_show_one_complete_run(conn, result["run_id"])
    status, k, silhouette, flow_run_id = conn.execute(
        "SELECT status, k, silhouette, flow_run_id FROM segmentation.runs WHERE run_id = %s", (result["run_id"],)
    ).fetchone()
    assert (status, k) == ("published", 5)
    assert silhouette == pytest.approx(0.5547, abs=1e-3)
    assert str(flow_run_id) == str(state.state_details.flow_run_id)
    # Every customer gets the segment whose centroid is nearest, with that distance.
    shares = conn.execute(
        "SELECT sum(share), sum(share_female + share_male + share_unknown_gender) FROM segmentation_bi.current_segments"
    ).fetchone()
    assert shares[0] == pytest.approx(1.0) and shares[1] == pytest.approx(5.0)
    assert conn.execute(
        "SELECT min(distance) >= 0, max(distance) < 3 FROM segmentation_bi.current_customer_segments"
    ).fetchone() == (True, True)
    assert_nearest_centroid(conn, ["annual_income", "spending_score"])


def assert_nearest_centroid(conn, features):
    """Brute force: every customer's stored segment is the nearest centroid in the run's
    standardised space (the population mean and standard deviation of the customers it was
    trained on), and its stored distance is the distance to that centroid."""
    rows = conn.execute(
        "SELECT c.customer_id, c.annual_income::float8, c.spending_score::float8, cs.segment_id, cs.distance "
        "FROM segmentation_bi.current_customer_segments cs JOIN customers c USING (customer_id) ORDER BY 1"
    ).fetchall()
    X = np.array([r[1:3] for r in rows])
    mean, scale = X.mean(axis=0), X.std(axis=0)
    centroids = conn.execute(
        "SELECT segment_id, array_agg(centroid ORDER BY array_position(%s::text[], feature)) "
        "FROM segmentation_bi.current_segment_centroids GROUP BY 1 ORDER BY 1",
        (features,),
    ).fetchall()
    ids = np.array([c[0] for c in centroids])
    C = (np.array([c[1] for c in centroids]) - mean) / scale
    d = np.sqrt(((((X - mean) / scale)[:, None, :] - C[None, :, :]) ** 2).sum(axis=2))
    assert [r[3] for r in rows] == ids[d.argmin(axis=1)].tolist()
    assert np.abs(d.min(axis=1) - np.array([r[4] for r in rows])).max() < 1e-9


def test_automatic_k_chooses_five_on_mall_data_and_stores_every_candidate(conn, mall_csv):
    load_csv(conn, mall_csv)
    state = run(features=["annual_income", "spending_score"])
    assert state.result()["k"] == 5
    assert_mall_segments(conn)
    rows = conn.execute(
        "SELECT k, inertia, silhouette FROM segmentation.k_selection WHERE run_id = %s ORDER BY k",
        (state.result()["run_id"],),
    ).fetchall()
    assert [r[0] for r in rows] == list(range(2, 11))
    assert max(rows, key=lambda r: r[2])[0] == 5
    assert all(a[1] > b[1] for a, b in itertools.pairwise(rows))


def test_invalid_rows_are_quarantined_with_reasons_and_never_segmented(conn):
    generate_customers(conn, 300, seed=1)
    conn.execute("UPDATE customers SET age = NULL WHERE customer_id = 1")
    conn.execute("UPDATE customers SET age = 150 WHERE customer_id = 2")
    conn.execute("UPDATE customers SET spending_score = 0 WHERE customer_id = 3")
    conn.execute("UPDATE customers SET annual_income = 'NaN' WHERE customer_id = 4")
    conn.execute("UPDATE customers SET annual_income = -5 WHERE customer_id = 5")
    conn.execute("UPDATE customers SET annual_income = 'Infinity' WHERE customer_id = 6")
    state = run(n_clusters=4)
    result = state.result()
    assert (result["n_customers"], result["n_quarantined"]) == (294, 6)
    rows = conn.execute(
        "SELECT customer_id, reason, record->>'customer_id' FROM segmentation.quarantine WHERE run_id = %s ORDER BY 1",
        (result["run_id"],),
    ).fetchall()
    assert rows == [
        (1, "age is NULL", "1"),
        (2, "age 150 is outside 0-120", "2"),
        (3, "spending_score 0 is outside 1-100", "3"),
        (4, "annual_income is NaN", "4"),
        (5, "annual_income -5 is outside at least 0", "5"),
        (6, "annual_income is Infinity", "6"),
    ]
    segmented = {r[0] for r in conn.execute("SELECT customer_id FROM segmentation_bi.current_customer_segments")}
    assert segmented.isdisjoint({1, 2, 3, 4, 5, 6}) and len(segmented) == 294
    assert conn.execute("SELECT n_quarantined FROM segmentation_bi.current_run").fetchone()[0] == 6


def test_gender_feature_is_normalised_and_unknown_values_are_quarantined(conn):
    insert_customers(
        conn,
        [
            (i, g, 30 + i % 20, 20 + 3 * i, 10 + (7 * i) % 80)
            for i, g in enumerate([" female", "MALE", "Female ", "male"] * 10 + ["other", None], start=1)
        ],
    )
    state = run(n_clusters=2, features=["gender", "annual_income"])
    result = state.result()
    assert (result["n_customers"], result["n_quarantined"]) == (40, 2)
    reasons = [r[0] for r in conn.execute("SELECT reason FROM segmentation.quarantine ORDER BY customer_id")]
    assert reasons == ["gender 'other' is not Female or Male", "gender NULL is not Female or Male"]
    shares = conn.execute(
        """SELECT c.centroid, s.share_female FROM segmentation_bi.current_segment_centroids c
           JOIN segmentation_bi.current_segments s USING (run_id, segment_id) WHERE c.feature = 'gender'"""
    ).fetchall()
    # With gender a feature, each segment's gender centroid is its share of women.
    for centroid, share_female in shares:
        assert centroid == pytest.approx(share_female)


LAX = {"min_silhouette": -1, "min_segment_share": 0}


def test_gender_spelled_f_and_m_gives_the_run_of_female_and_male(conn):
    generate_customers(conn, 1500, seed=7)
    conn.execute("CREATE TABLE public.crm (LIKE public.customers INCLUDING ALL)")
    conn.execute(
        """INSERT INTO public.crm SELECT customer_id,
               (CASE gender WHEN 'Female' THEN ARRAY['F', 'f', ' F '] ELSE ARRAY['M', 'm ', ' m'] END)[1 + customer_id % 3],
               age, annual_income, spending_score FROM public.customers ORDER BY customer_id"""
    )
    assert conn.execute("SELECT count(DISTINCT gender) FROM public.crm").fetchone()[0] == 6
    features = ["gender", "age", "annual_income", "spending_score"]
    spelled_out = run(n_clusters=4, n_init=2, features=features, **LAX).result()
    spelled_out_rows = keep_assignments(conn, spelled_out["run_id"])
    letters = run(n_clusters=4, n_init=2, features=features, source_table="public.crm", **LAX).result()
    assert [(r["n_customers"], r["n_quarantined"]) for r in (spelled_out, letters)] == [(1500, 0)] * 2

    # The other table's run numbers its segments afresh: matched through the customers, one to one.
    pairs = conn.execute(
        f"""SELECT DISTINCT a.segment_id, b.segment_id FROM {spelled_out_rows} a
            JOIN segmentation_bi.current_customer_segments b USING (customer_id)"""
    ).fetchall()
    same = dict(pairs)
    assert len(pairs) == len(set(same.values())) == 4
    other_distance = conn.execute(
        f"""SELECT count(*) FROM {spelled_out_rows} a JOIN segmentation_bi.current_customer_segments b
            USING (customer_id) WHERE a.distance <> b.distance"""
    ).fetchone()[0]
    assert other_distance == 0

    def segments(run_id, ids=None):
        rows = conn.execute(
            """SELECT s.segment_id, s.n_customers, s.share_female, s.share_male, s.share_unknown_gender,
                      array_agg(c.centroid ORDER BY c.feature)
               FROM segmentation.segments s JOIN segmentation.segment_centroids c USING (run_id, segment_id)
               WHERE run_id = %s GROUP BY 1, 2, 3, 4, 5""",
            (run_id,),
        ).fetchall()
        return sorted(((ids or {}).get(r[0], r[0]), *r[1:]) for r in rows)

    expected = segments(spelled_out["run_id"], same)
    assert segments(letters["run_id"]) == expected
    # Every customer's gender was read: none unknown, and the shares count the women.
    women = conn.execute("SELECT count(*) FROM public.customers WHERE gender = 'Female'").fetchone()[0]
    assert {r[4] for r in expected} == {0.0} and round(sum(r[1] * r[2] for r in expected)) == women > 0
    # The picture's sample reads F/M back as training did: every customer, gender 1 or 0.
    sample = readback.load(conn, letters["run_id"]).sample
    assert len(sample) == 1500 and set(sample[:, features.index("gender")]) == {0.0, 1.0}


UNREAD = (
    "no customer's gender in public.customers is one the run recognises (Female, F, Male or M, in any case), "
    "so share_female and share_male are NULL; recode the column (or read the source through a view that does) "
    "to report gender shares"
)


def test_a_source_that_codes_gender_1_2_says_so_instead_of_reporting_no_women(conn, caplog):
    generate_customers(conn, 600, seed=8)
    conn.execute("UPDATE customers SET gender = CASE gender WHEN 'Female' THEN '2' ELSE '1' END")
    state = run(n_clusters=3, **LAX)
    result = state.result()
    assert result["status"] == "published" and (result["n_customers"], result["n_quarantined"]) == (600, 0)
    shares = conn.execute(
        "SELECT share_female, share_male, share_unknown_gender FROM segmentation_bi.current_segments"
    ).fetchall()
    assert shares == [(None, None, 1.0)] * 3
    # One line, in the log and in the report (the summary artifact, and `segmentation show`).
    assert caplog.text.count(UNREAD) == 1
    summary = artifacts_of(state.state_details.flow_run_id)[SUMMARY_KEY].data
    assert f"warning: {UNREAD}  \n" in summary and "| female |" not in summary
    assert f"warning: {UNREAD}" in readback.load(conn, result["run_id"]).text().splitlines()

    # With gender a feature, the rules quarantine every row, and no run reports it.
    failed = run(n_clusters=3, features=["gender", "age"], **LAX)
    assert failed.is_failed()
    run_id = conn.execute("SELECT max(run_id) FROM segmentation.runs").fetchone()[0]
    reasons = conn.execute(
        "SELECT reason, count(*) FROM segmentation.quarantine WHERE run_id = %s GROUP BY 1 ORDER BY 1", (run_id,)
    ).fetchall()
    coded = conn.execute("SELECT gender, count(*) FROM customers GROUP BY 1 ORDER BY 1").fetchall()
    assert reasons == [(f"gender '{g}' is not Female or Male", n) for g, n in coded]
    assert conn.execute("SELECT count(*) FROM segmentation.segments WHERE run_id = %s", (run_id,)).fetchone()[0] == 0
    assert conn.execute("SELECT run_id FROM segmentation_bi.current_run").fetchone()[0] == result["run_id"]


def test_a_source_with_some_genders_recognised_reports_its_shares(conn, caplog):
    """Only a source with no gender recognised at all is warned about: one F among unknowns
    is a real (small) share, and 0% male is a real 0."""
    insert_customers(conn, [(i, "F" if i == 1 else "1", 20 + i % 40, 15 + i % 60, 10 + i % 80) for i in range(1, 61)])
    result = run(n_clusters=2, **LAX).result()
    female, male = conn.execute(
        "SELECT sum(share_female * n_customers), sum(share_male) FROM segmentation_bi.current_segments"
    ).fetchone()
    assert (round(female), male) == (1, 0.0)
    assert UNREAD not in caplog.text and "warning:" not in readback.load(conn, result["run_id"]).text()


def test_custom_schema_table_and_columns(conn):
    conn.execute('CREATE SCHEMA "Retail"')
    conn.execute('CREATE TABLE "Retail".shoppers (shopper_no integer PRIMARY KEY, visits real, basket numeric)')
    rng = np.random.default_rng(0)
    rows = [
        (i, float(v), float(b))
        for i, (v, b) in enumerate(
            np.concatenate([rng.normal((5, 20), 1, (30, 2)), rng.normal((20, 80), 1, (30, 2))]), start=1
        )
    ]
    with conn.cursor().copy('COPY "Retail".shoppers FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)
    state = run(source_table='"Retail".shoppers', id_column="shopper_no", features=["visits", "basket"], k_max=4)
    result = state.result()
    assert (result["k"], result["n_customers"]) == (2, 60)
    sizes = sorted(r[0] for r in conn.execute("SELECT n_customers FROM segmentation_bi.current_segments"))
    assert sizes == [30, 30]
    genders = conn.execute("SELECT share_female FROM segmentation_bi.current_segments").fetchall()
    assert genders == [(None,), (None,)]  # no gender column in that source
    # The CRM export of docs/bi.md, with this run's source_table and id_column put in as it says.
    crm_export = (
        documented_sql("bi.md", "The CRM export")
        .replace("public.customers", '"Retail".shoppers')
        .replace("cu.customer_id", "cu.shopper_no")
    )
    exported = conn.execute(crm_export).fetchall()
    in_segment = conn.execute(
        "SELECT customer_id FROM segmentation_bi.current_customer_segments WHERE segment_id = 2"
    ).fetchall()
    assert sorted(r[0] for r in exported) == sorted(r[0] for r in in_segment) and len(exported) == 30
    assert {len(r) for r in exported} == {3}  # the source's own columns: shopper_no, visits, basket


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"source_table": "public.customerz"},
            "source table public.customerz does not exist; tables in schema public: customers",
        ),
        (
            {"features": ["age", "incom"]},
            "column incom does not exist in public.customers; its columns are: customer_id (bigint), gender (text), age (integer)",
        ),
        ({"features": ["gender", "age"], "id_column": "age"}, "id column age cannot also be a feature"),
        ({"features": ["age", "age"]}, "features lists a column twice"),
    ],
)
def test_unknown_names_fail_with_what_exists(conn, params, message):
    generate_customers(conn, 50, seed=0)
    state = run(n_clusters=3, **params)
    assert message in error_of(state)
    status, error = conn.execute("SELECT status, error FROM segmentation.runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert status == "failed" and message in error
    assert state.message == error  # the Prefect state message is the reason, nothing else


def test_text_feature_column_is_refused(conn):
    conn.execute("CREATE TABLE public.people (customer_id bigint PRIMARY KEY, age text, score int)")
    conn.execute("INSERT INTO public.people SELECT g, g::text, g FROM generate_series(1, 20) g")
    state = run(source_table="public.people", features=["age", "score"], n_clusters=2)
    assert error_of(state) == (
        "feature column age of public.people is text; a number feature must be numeric: "
        "use age:category for one-hot levels"
    )


def test_too_few_customers_and_identical_customers_are_refused(conn):
    insert_customers(conn, [(1, "Male", 30, 50, 50), (2, "Female", 40, 60, 60)])
    assert "only 2 valid customers for 5 clusters" in error_of(run(n_clusters=5))
    conn.execute("TRUNCATE customers")
    insert_customers(conn, [(i, "Male", 30, 50, 50) for i in range(1, 101)])
    assert "all 100 valid customers have identical features" in error_of(run())
    conn.execute("TRUNCATE customers")
    assert "only 0 valid customers" in error_of(run(n_clusters=3))
    assert conn.execute("SELECT count(*) FROM segmentation.runs WHERE status = 'published'").fetchone()[0] == 0


def test_a_failure_mid_run_leaves_the_previous_run_current(conn, mall_csv, monkeypatch):
    load_csv(conn, mall_csv)
    first = run(n_clusters=5, features=["annual_income", "spending_score"]).result()["run_id"]

    import segmentation.store.runs as runs

    real_copy_frame = runs._copy_frame

    def explode_after_segments(connection, table, frame):
        real_copy_frame(connection, table, frame)
        if table == "segment_centroids":
            raise RuntimeError("disk full while publishing")

    monkeypatch.setattr(runs, "_copy_frame", explode_after_segments)
    conn.execute("UPDATE customers SET spending_score = 100 - spending_score")
    state = run(n_clusters=3, features=["annual_income", "spending_score"])
    assert "disk full while publishing" in error_of(state)
    assert_views_show_one_complete_run(conn, first)
    assert_mall_segments(conn)
    failed = conn.execute("SELECT run_id, status, error FROM segmentation.runs WHERE run_id <> %s", (first,)).fetchone()
    assert failed[1:] == ("failed", "RuntimeError: disk full while publishing")
    assert conn.execute("SELECT count(*) FROM segmentation.segments WHERE run_id = %s", (failed[0],)).fetchone()[0] == 0
    monkeypatch.setattr(runs, "_copy_frame", real_copy_frame)
    second = run(n_clusters=3, features=["annual_income", "spending_score"]).result()["run_id"]
    assert_views_show_one_complete_run(conn, second)
    # The failed run had attached its table; the next run's retention pass detached it
    # (concurrently, so BI readers never waited) and dropped it.
    assert conn.execute(
        "SELECT to_regclass(%s) IS NULL", (f"segmentation.customer_segments_run_{failed[0]}",)
    ).fetchone()[0]


def test_a_second_run_while_one_holds_the_lock_exits_clearly(conn, database_url):
    generate_customers(conn, 100, seed=0)
    from segmentation.store.runs import RUN_LOCK_KEY

    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        assert "another segmentation run is in progress" in error_of(run(n_clusters=3))
        other.execute("SELECT pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))  # a closed session's lock goes later
    assert run(n_clusters=3).is_completed()


def test_a_run_left_running_by_a_dead_process_is_marked_abandoned(conn):
    generate_customers(conn, 100, seed=0)
    conn.execute(
        "INSERT INTO segmentation.runs (source_table, features) VALUES ('public.customers', '{age}') RETURNING run_id"
    )
    result = run(n_clusters=3).result()
    rows = conn.execute("SELECT run_id, status, error FROM segmentation.runs ORDER BY run_id").fetchall()
    assert rows[0][1:] == ("failed", "abandoned: the process running it stopped before it finished")
    assert rows[1][:2] == (result["run_id"], "published")


def test_chunked_and_sampled_runs_are_exact_and_reproducible(conn, monkeypatch):
    generate_customers(conn, 3000, seed=5)
    baseline = keep_assignments(conn, run(n_clusters=4).result()["run_id"])

    def assignments(table="segmentation_bi.current_customer_segments"):
        return conn.execute(f"SELECT customer_id, segment_id, distance FROM {table} ORDER BY 1").fetchall()

    monkeypatch.setenv("SEGMENTATION_CHUNK_ROWS", "128")
    run(n_clusters=4)
    assert assignments() == assignments(baseline)

    monkeypatch.setenv("SEGMENTATION_TRAINING_SAMPLE_SIZE", "700")
    first = keep_assignments(conn, run(n_clusters=4).result()["run_id"])
    # Physical row order changes; the hash sample does not care.
    conn.execute("CLUSTER customers USING customers_pkey")
    conn.execute("UPDATE customers SET age = age WHERE customer_id % 2 = 0")
    second = run(n_clusters=4).result()
    assert assignments() == assignments(first)
    assert len(assignments()) == 3000
    params = conn.execute("SELECT params FROM segmentation.runs WHERE run_id = %s", (second["run_id"],)).fetchone()[0]
    assert (params["training_sample_size"], params["chunk_rows"]) == (700, 128)
