"""The CRM shape's generator (segmentation.core.synthetic_crm): deterministic, well-formed,
heavy-tailed, and built of groups an RFM segmentation finds again."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from segmentation.core import synthetic_crm
from segmentation.core.synthetic_crm import COUNTRIES, GROUPS, PLANS, generate

pytestmark = pytest.mark.unit

AS_OF = np.datetime64("2026-06-30T12:00:00", "us")
DAY = np.timedelta64(1, "D")


@pytest.fixture(scope="module")
def data() -> synthetic_crm.CrmData:
    return generate(20_000, 7, AS_OF)


def _per_customer(data: synthetic_crm.CrmData) -> dict[str, np.ndarray]:
    """Each customer's orders, revenue and first and last order, computed from the orders."""
    ids = data.customers["id"]
    position = {customer: i for i, customer in enumerate(ids.tolist())}
    owner = np.array([position[c] for c in data.orders["customer_id"].tolist()])
    last = np.full(len(ids), np.datetime64("NaT", "us"))
    first = np.full(len(ids), np.datetime64("NaT", "us"))
    for i, at in zip(owner.tolist(), data.orders["ordered_at"]):  # oldest first
        if np.isnat(first[i]):
            first[i] = at
        last[i] = at
    return {
        "orders": np.bincount(owner, minlength=len(ids)),
        "revenue": np.bincount(owner, weights=data.orders["amount"], minlength=len(ids)),
        "first": first,
        "last": last,
    }


def test_the_same_seed_makes_the_same_data_and_another_seed_other_data():
    a, b, other = generate(3000, 3, AS_OF), generate(3000, 3, AS_OF), generate(3000, 4, AS_OF)
    for part in ("customers", "orders"):
        for name, column in getattr(a, part).items():
            np.testing.assert_array_equal(column, getattr(b, part)[name])
    np.testing.assert_array_equal(a.group, b.group)
    assert len(set(a.customers["id"].tolist()) & set(other.customers["id"].tolist())) == 0
    assert not np.array_equal(a.frequency, other.frequency)


def test_ids_are_unique_and_well_formed_and_every_order_has_a_customer(data):
    ids = data.customers["id"].tolist()
    assert len(set(ids)) == len(ids) == 20_000
    assert all(re.fullmatch(rb"cus_[0-9A-Za-z]{14}", i) for i in ids)
    assert set(data.orders["customer_id"].tolist()) <= set(ids)
    emails = data.customers["email"].tolist()
    assert emails[:2] == [b"customer1@example.com", b"customer2@example.com"] and len(set(emails)) == len(emails)


def test_colliding_ids_are_drawn_again(monkeypatch):
    """With one random character there are 62 ids: 62 customers take every one of them."""
    monkeypatch.setattr(synthetic_crm, "ID_RANDOM_CHARS", 1)
    ids = synthetic_crm._ids(np.random.default_rng(0), 62)
    assert sorted(ids.tolist()) == sorted(b"cus_" + bytes([c]) for c in synthetic_crm.BASE62.tolist())


@pytest.mark.parametrize("n", [100, 20_000])
def test_29_percent_never_order(n):
    made = generate(n, 11, AS_OF)
    never = made.frequency == 0
    assert abs(never.mean() - 0.29) <= 0.005
    assert set(made.orders["customer_id"].tolist()) == set(made.customers["id"][~never].tolist())
    assert made.frequency.sum() == len(made.orders["customer_id"])


def test_amounts_and_order_counts_are_heavy_tailed(data):
    per = _per_customer(data)
    np.testing.assert_array_equal(per["orders"], data.frequency)
    revenue = np.sort(per["revenue"])[::-1]
    assert revenue[: len(revenue) // 100].sum() / revenue.sum() > 0.25  # the top 1% of customers
    amounts = data.orders["amount"]
    assert amounts.max() > 50 * np.median(amounts) and amounts.min() >= 1.0
    assert np.array_equal(amounts, np.round(amounts, 2))
    buyers = data.frequency[data.frequency > 0]
    assert np.median(buyers) <= 2 and buyers.max() >= 60


def test_dates_lie_before_as_of_and_sign_ups_before_first_orders(data):
    per = _per_customer(data)
    at = data.orders["ordered_at"]
    assert np.all(at[1:] >= at[:-1]) and at[-1] <= AS_OF  # oldest first
    ordered = data.frequency > 0
    signup = data.customers["signup_date"]
    assert np.all(signup[ordered] <= per["first"][ordered].astype("datetime64[D]"))
    assert np.all(signup <= AS_OF.astype("datetime64[D]"))
    assert np.all(AS_OF - signup[~ordered] < (synthetic_crm.SIGNUP_SPAN_DAYS + 1) * DAY)  # whole days
    assert np.isnat(per["last"][~ordered]).all()


def test_groups_differ_as_their_definitions_say(data):
    per = _per_customer(data)
    recency_days = (AS_OF - per["last"]) / DAY
    for g, spec in enumerate(GROUPS):
        members = data.group == g
        assert abs(members.mean() - spec.share) < 0.001, spec.name
        if spec.orders[0] == 0:
            assert (data.frequency[members] == 0).all()
            continue
        low, high = spec.recency_days
        assert ((recency_days[members] >= low) & (recency_days[members] <= high)).all(), spec.name
        assert (data.frequency[members] >= spec.orders[0]).all(), spec.name
    one_timers = np.isin(data.group, [g for g, spec in enumerate(GROUPS) if spec.orders == (1, 1, 0)])
    assert (data.frequency[one_timers] == 1).all()


def test_an_rfm_segmentation_finds_the_groups_again(data):
    """KMeans on log recency, frequency and monetary value of the customers with orders puts
    the five ordering groups in five segments, nearly as they were made."""
    per = _per_customer(data)
    ordered = data.frequency > 0
    recency_days = ((AS_OF - per["last"]) / DAY)[ordered]
    features = np.log1p(np.column_stack([recency_days, data.frequency[ordered], per["revenue"][ordered]]))
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    found = KMeans(5, n_init=4, random_state=0).fit_predict(features)
    assert adjusted_rand_score(data.group[ordered], found) > 0.75


def test_categories_are_skewed_and_from_their_lists(data):
    customers = data.customers
    plans = Counter(customers["plan"].astype(str).tolist())
    assert set(plans) == set(PLANS) and plans.most_common(1)[0][0] == "free"
    assert plans["enterprise"] < plans["pro"] < plans["basic"]
    countries = Counter(customers["country"].astype(str).tolist())
    assert set(countries) == set(COUNTRIES) and len(COUNTRIES) == 12
    assert countries.most_common(1)[0][0] == "US" and countries["US"] > 5 * countries["IN"]
    genders = Counter(customers["gender"].astype(str).tolist())
    assert set(genders) == {"F", "M", "U"} and genders["U"] < genders["M"] < genders["F"]
    assert 0.2 < customers["marketing_opt_in"].mean() < 0.5
    vips = data.group == [spec.name for spec in GROUPS].index("VIPs")
    enterprise = customers["plan"] == b"enterprise"
    assert enterprise[vips].mean() > 4 * enterprise[~vips].mean()
