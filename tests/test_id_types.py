"""Any id type (sql/018, segmentation/source/customer_keys.py): text and uuid ids, on the CRM
shape, against a real PostgreSQL and the real flow. The BI views speak the source's own id in
its own type, so a join to the source needs no cast; a text-id segmentation runs beside the
integer default; a rerun compares in memory by key; erasure takes the source's id; two ids that
share a key stop the run before it writes anything; the views follow the current run's id type
through a rollback."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from segmentation import crm_shape
from segmentation.cli import main
from segmentation.flows.segmentation import customer_segmentation
from segmentation.loading import generate_customers
from segmentation.segmentations import CUSTOMER_VIEWS, view_name
from segmentation.store import readback

RFM = {
    "segmentation": "rfm",
    "source_table": "crm.customer_rfm",
    "id_column": "id",
    "features": [
        {"column": "recency_days", "transform": "log1p", "missing": "segment", "missing_segment": "Never ordered"},
        {"column": "frequency", "transform": "log1p"},
        {"column": "monetary", "transform": "log1p"},
        {"column": "plan", "kind": "category"},
    ],
    "n_clusters": 4,
    "n_init": 1,
}


@pytest.fixture
def crm(conn):
    crm_shape.generate(conn, 1500, 7, "crm")
    return conn


def run(**params):
    state = customer_segmentation(**params, return_state=True)
    return state, state.result(raise_on_failure=False)


def _types(conn, segmentation):
    """The type of customer_id in each of the segmentation's views of customers."""
    return {
        view: conn.execute(
            """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
               WHERE a.attrelid = %s::regclass AND a.attname = 'customer_id'""",
            (f"segmentation_bi.{view_name(segmentation, view)}",),
        ).fetchone()[0]
        for view in CUSTOMER_VIEWS
    }


def _found_by_index(conn, view: str, customer_id) -> tuple[int, str]:
    """A lookup of one customer by id through a BI view, as a BI tool filters: how many rows it
    finds, and the plan, with sequential scans off so that a plan that can use the segmentation's
    lookup index (customer_keys.ensure_lookup_index) must (the tests' tables are small enough for
    the planner to scan them whole, which at 10M customers read the whole run)."""
    query = f"SELECT * FROM segmentation_bi.{view} WHERE customer_id = %s"
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}", (customer_id,)))
        found = len(conn.execute(query, (customer_id,)).fetchall())
    return found, plan


def _by_lookup_index(plan: str, segmentation: str) -> bool:
    """Whether the plan reads the map through the segmentation's lookup index: an index scan or
    a bitmap index scan, whichever the server's planner picks (PostgreSQL 15 here, the embedded
    server's version on a laptop)."""
    return re.search(rf"Index Scan (using|on) customer_ids_{segmentation}_by_\w+", plan) is not None


def test_text_ids_publish_views_that_speak_them_beside_an_integer_default(crm):
    generate_customers(crm, 800, seed=3)
    default, _ = run(features=["annual_income", "spending_score"], n_clusters=4, n_init=1)
    rfm, _ = run(**RFM)
    assert default.is_completed() and rfm.is_completed()

    # Every view of customers speaks the source's ids, in the source's type; the default's stay bigint.
    assert _types(crm, "rfm") == dict.fromkeys(CUSTOMER_VIEWS, "text")
    assert _types(crm, "default") == dict.fromkeys(CUSTOMER_VIEWS, "bigint")

    # The README's export: a join on the configured id, no cast; every customer, each once.
    rows = crm.execute(
        """SELECT c.id, c.email, s.segment_id, s.segment_name FROM crm.customers c
           JOIN segmentation_bi.rfm_customer_segments s ON c.id = s.customer_id"""
    ).fetchall()
    assert len(rows) == 1500 and len({r[0] for r in rows}) == 1500
    assert all(r[0].startswith("cus_") for r in rows)
    never = crm.execute("SELECT count(*) FROM crm.customer_rfm WHERE recency_days IS NULL").fetchone()[0]
    in_never = crm.execute(
        """SELECT count(*) FROM segmentation_bi.rfm_customer_segments s JOIN segmentation_bi.rfm_segments g
           USING (segment_id) WHERE g.segment_name = 'Never ordered'"""
    ).fetchone()[0]
    assert in_never == never > 0
    # The keys are the rule's: PostgreSQL's 64-bit hash of the id's text, recorded once each.
    assert crm.execute(
        """SELECT count(*), count(*) FILTER (WHERE customer_key = hashtextextended(customer_id, 0))
           FROM segmentation.customer_ids WHERE segmentation = 'rfm'"""
    ).fetchone() == (1500, 1500)
    # History and spells speak them too.
    assert (
        crm.execute(
            "SELECT count(DISTINCT customer_id) FROM segmentation_bi.rfm_customer_segment_history h JOIN crm.customers c ON c.id = h.customer_id"
        ).fetchone()[0]
        == 1500
    )
    assert (
        crm.execute(
            "SELECT count(*) FROM segmentation_bi.rfm_customer_segment_spells WHERE valid_to IS NULL"
        ).fetchone()[0]
        == 1500
    )
    # The run's picture samples customers with their source rows, found by id through the map.
    rfm_run = crm.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0]
    picture = readback.load(crm, rfm_run, sample_size=300)
    # 300 drawn; those who never ordered (no recency to plot) are left out of the picture.
    assert picture is not None and 150 < len(picture.sample) < 300
    segments = {r[0] for r in crm.execute("SELECT segment_id FROM segmentation_bi.rfm_segments")}
    assert set(picture.sample_labels.tolist()) <= segments
    # The default is untouched: its own integer customers.
    assert crm.execute(
        "SELECT count(*), min(customer_id) FROM segmentation_bi.current_customer_segments"
    ).fetchone() == (800, 1)

    # One customer by id: through the index on the id as the view gives it.
    some = crm.execute("SELECT id FROM crm.customers ORDER BY id LIMIT 1 OFFSET 700").fetchone()[0]
    found, plan = _found_by_index(crm, "rfm_customer_segments", some)
    assert found == 1 and _by_lookup_index(plan, "rfm"), plan

    # A rerun on the same rows: compared in memory by key, nobody moved, nothing new recorded.
    # Its lookup index dropped first, as a partition made before it existed lacks it: the run makes it.
    index = crm.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'customer_ids_rfm_by_%'").fetchone()[0]
    crm.execute(f"DROP INDEX segmentation.{index}")
    again, _ = run(**RFM)
    assert again.is_completed()
    churn, changed = crm.execute(
        "SELECT churn, customers_changed FROM segmentation.runs WHERE segmentation = 'rfm' ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    assert churn == 0.0 and changed == 0
    assert crm.execute("SELECT count(*) FROM segmentation.customer_ids").fetchone()[0] == 1500
    found, plan = _found_by_index(crm, "rfm_customer_segments", some)
    assert found == 1 and _by_lookup_index(plan, "rfm"), plan

    # New customers and a departure: the next run records only the arrivals, and the history says who left.
    crm.execute(
        """INSERT INTO crm.customers (id, email, plan, country, signup_date, gender, marketing_opt_in)
           SELECT 'cus_new_' || g, 'new' || g || '@example.com', 'free', 'DE', date '2026-01-01', 'F', true
           FROM generate_series(1, 5) g"""
    )
    gone = crm.execute(
        "SELECT id FROM crm.customers c WHERE NOT EXISTS (SELECT FROM crm.orders o WHERE o.customer_id = c.id) LIMIT 1"
    ).fetchone()[0]
    crm.execute("DELETE FROM crm.customers WHERE id = %s", (gone,))
    third, _ = run(**RFM)
    assert third.is_completed()
    assert crm.execute("SELECT count(*) FROM segmentation.customer_ids").fetchone()[0] == 1505
    assert (
        crm.execute(
            "SELECT count(*) FROM segmentation_bi.rfm_customer_segments WHERE customer_id LIKE 'cus_new_%'"
        ).fetchone()[0]
        == 5
    )
    # The night's change feed speaks them too: who entered, who left.
    feed = dict(
        crm.execute(
            "SELECT customer_id, change FROM segmentation_bi.rfm_segment_changes WHERE change IN ('entered', 'left')"
        ).fetchall()
    )
    assert feed == {**{f"cus_new_{g}": "entered" for g in range(1, 6)}, gone: "left"}
    left = crm.execute(
        "SELECT valid_to IS NOT NULL FROM segmentation_bi.rfm_customer_segment_spells WHERE customer_id = %s",
        (gone,),
    ).fetchall()
    assert left == [(True,)]

    # Erasure by the source's id: gone from every view and from the map of ids; the default keeps its own.
    victim = crm.execute("SELECT customer_id FROM segmentation_bi.rfm_customer_segments LIMIT 1").fetchone()[0]
    assert main(["purge", "--customer-id", victim]) == 0
    for view in (view_name("rfm", v) for v in CUSTOMER_VIEWS):
        assert (
            crm.execute(f"SELECT count(*) FROM segmentation_bi.{view} WHERE customer_id = %s", (victim,)).fetchone()[0]
            == 0
        )
    assert (
        crm.execute("SELECT count(*) FROM segmentation.customer_ids WHERE customer_id = %s", (victim,)).fetchone()[0]
        == 0
    )
    n_customers, total = crm.execute(
        """SELECT r.n_customers, (SELECT sum(n_customers) FROM segmentation_bi.rfm_segments)
           FROM segmentation_bi.rfm_run r"""
    ).fetchone()
    assert (
        n_customers == total == crm.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segments").fetchone()[0]
    )
    assert crm.execute("SELECT count(*) FROM segmentation_bi.current_customer_segments").fetchone()[0] == 800


def test_uuid_ids_are_uuid_in_the_views_and_erased_however_they_are_written(crm):
    crm.execute(
        """CREATE TABLE public.members AS
           SELECT gen_random_uuid() AS member_id, r.frequency, r.monetary, r.plan FROM crm.customer_rfm r"""
    )
    crm.execute("ALTER TABLE public.members ADD PRIMARY KEY (member_id)")
    params = {
        "segmentation": "members",
        "source_table": "public.members",
        "id_column": "member_id",
        "features": [{"column": "frequency", "transform": "log1p"}, {"column": "monetary", "transform": "log1p"}],
        "n_clusters": 3,
        "n_init": 1,
    }
    state, _ = run(**params)
    assert state.is_completed()
    assert _types(crm, "members") == dict.fromkeys(CUSTOMER_VIEWS, "uuid")
    assert (
        crm.execute(
            """SELECT count(*) FROM public.members m JOIN segmentation_bi.members_customer_segments s
           ON m.member_id = s.customer_id"""
        ).fetchone()[0]
        == 1500
    )
    # A lookup by one customer's id, as a BI tool filters: through the index on the id as a uuid.
    one = crm.execute("SELECT member_id FROM public.members LIMIT 1").fetchone()[0]
    assert isinstance(one, uuid.UUID)
    found, plan = _found_by_index(crm, "members_customer_segments", one)
    assert found == 1 and _by_lookup_index(plan, "members"), plan
    # Erased by its id in upper case: a uuid is the same uuid however it is written.
    assert main(["purge", "--customer-id", str(one).upper()]) == 0
    assert (
        crm.execute(
            "SELECT count(*) FROM segmentation_bi.members_customer_segments WHERE customer_id = %s", (one,)
        ).fetchone()[0]
        == 0
    )
    assert crm.execute("SELECT n_customers FROM segmentation_bi.members_run").fetchone()[0] == 1499


def test_two_ids_with_one_key_stop_the_run_before_it_publishes(crm):
    published, _ = run(**RFM)
    assert published.is_completed()
    current = crm.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0]
    # What a collision looks like: a new customer whose key is recorded for another id.
    crm.execute(
        """INSERT INTO crm.customers (id, email, plan, country, signup_date, gender, marketing_opt_in)
           VALUES ('cus_arrived', 'arrived@example.com', 'free', 'DE', date '2026-01-01', 'F', true)"""
    )
    crm.execute(
        "INSERT INTO segmentation.customer_ids VALUES ('rfm', hashtextextended('cus_arrived', 0), 'cus_departed')"
    )
    said = (
        "customer ids 'cus_arrived' and 'cus_departed' have the same 64-bit key, which this job cannot tell apart; "
        "give one of them another id in the source"
    )
    # Either way of finding the new ids: the night's arrivals, after a comparison in memory with
    # the previous run; and every id against those recorded, on another table of the same ids.
    crm.execute("CREATE TABLE public.rfm_copy AS TABLE crm.customer_rfm")
    crm.execute("ALTER TABLE public.rfm_copy ADD PRIMARY KEY (id)")
    for source_table in ("crm.customer_rfm", "public.rfm_copy"):
        state, _ = run(**{**RFM, "source_table": source_table})
        assert state.is_failed()
        status, error = crm.execute(
            "SELECT status, error FROM segmentation.runs WHERE segmentation = 'rfm' ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        assert (status, error) == ("failed", said)
        # Nothing published, nothing else recorded, the failed run's rows dropped.
        assert crm.execute("SELECT run_id FROM segmentation_bi.rfm_run").fetchone()[0] == current
        assert crm.execute("SELECT count(*) FROM segmentation.customer_ids").fetchone()[0] == 1501
        assert crm.execute(
            "SELECT count(DISTINCT run_id), count(*) FROM segmentation.customer_segments"
        ).fetchone() == (1, 1500)


def test_the_views_follow_the_current_runs_id_type_through_a_rollback(crm, logins):
    crm.execute(
        """CREATE TABLE public.numbered AS
           SELECT row_number() OVER (ORDER BY id)::bigint AS id, r.frequency, r.monetary FROM crm.customer_rfm r"""
    )
    crm.execute("ALTER TABLE public.numbered ADD PRIMARY KEY (id)")
    features = [{"column": "frequency", "transform": "log1p"}, {"column": "monetary", "transform": "log1p"}]
    common = {"segmentation": "rfm", "id_column": "id", "features": features, "n_clusters": 3, "n_init": 1}
    first, _ = run(source_table="public.numbered", **common)
    assert first.is_completed()
    assert _types(crm, "rfm") == dict.fromkeys(CUSTOMER_VIEWS, "bigint")
    second, _ = run(source_table="crm.customer_rfm", force_publish=True, **common)
    assert second.is_completed()
    assert _types(crm, "rfm") == dict.fromkeys(CUSTOMER_VIEWS, "text")
    assert (
        crm.execute("SELECT min(customer_id) FROM segmentation_bi.rfm_customer_segments")
        .fetchone()[0]
        .startswith("cus_")
    )

    assert main(["rollback", "--segmentation", "rfm", "--reason", "back to the numbered ids"]) == 0
    assert _types(crm, "rfm") == dict.fromkeys(CUSTOMER_VIEWS, "bigint")
    assert crm.execute(
        "SELECT count(*), min(customer_id), max(customer_id) FROM segmentation_bi.rfm_customer_segments"
    ).fetchone() == (1500, 1, 1500)
    # The reader still reads the views created again, as it read them before.
    with psycopg.connect(logins["reader"]) as reader:
        assert reader.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segments").fetchone()[0] == 1500
        assert reader.execute("SELECT count(*) FROM segmentation_bi.rfm_customer_segment_spells").fetchone()[0] > 0
