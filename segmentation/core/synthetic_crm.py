"""Synthetic CRM customers and their orders, for `segmentation generate --shape crm`: text
ids, plans, countries, signup dates, and orders whose counts and amounts are heavy-tailed.

Customers come from hidden groups (GROUPS) that an RFM segmentation should find again: they
differ in how many orders they place, how long ago the last one was, and how much they spend.
Pure: the caller gives the instant everything is relative to (as_of, the database's clock),
so that on that day each group's last orders fall in its recency window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ID_PREFIX = b"cus_"
ID_RANDOM_CHARS = 14  # 62^14 ids: a million customers collide with odds of about 1 in 10^13, redrawn then
BASE62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)

PLANS = ("free", "basic", "pro", "enterprise")
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IT", "SE", "BR", "IN")
COUNTRY_SHARES = (0.30, 0.12, 0.10, 0.08, 0.07, 0.06, 0.05, 0.05, 0.05, 0.04, 0.04, 0.04)
GENDERS = ("F", "M", "U")  # U: not given, as CRMs code it
GENDER_SHARES = (0.49, 0.43, 0.08)

SIGNUP_SPAN_DAYS = 1100  # customers who never ordered signed up within this many days of as_of
SIGNUP_GAP_DAYS = 30.0  # mean days between signing up and the first order (exponential)
ORDER_NOISE = 0.6  # log-sd of one order's amount around its customer's usual basket
BASKET_SPREAD = 0.5  # log-sd of customers' usual baskets within a group
WHALE_SHARE = 0.002  # of the customers with orders: their baskets are WHALE_FACTOR times larger
WHALE_FACTOR = 20.0
MAX_AMOUNT = 50_000.0
MIN_AMOUNT = 1.0
MAX_ORDERS = 1000


@dataclass(frozen=True)
class Group:
    name: str
    share: float  # of all customers
    orders: tuple[int, float, float]  # at least, median, log-sd: max(least, round(log-normal))
    recency_days: tuple[float, float]  # the last order, days before as_of
    tenure_days: tuple[float, float]  # from the first order to the last
    basket: float  # median amount of an order
    plans: tuple[float, float, float, float]  # shares of PLANS
    opt_in: float  # share with marketing_opt_in


GROUPS = (
    Group("never ordered", 0.29, (0, 0, 0), (0, 0), (0, 0), 0, (0.70, 0.20, 0.08, 0.02), 0.25),
    Group("lapsed one-timers", 0.22, (1, 1, 0), (180, 900), (0, 0), 35, (0.60, 0.25, 0.12, 0.03), 0.20),
    Group("recent one-timers", 0.10, (1, 1, 0), (0, 30), (0, 0), 40, (0.55, 0.27, 0.14, 0.04), 0.40),
    Group("at-risk repeat buyers", 0.16, (2, 3, 0.4), (90, 270), (60, 540), 55, (0.40, 0.32, 0.22, 0.06), 0.30),
    Group("active repeat buyers", 0.18, (2, 4, 0.5), (0, 30), (30, 720), 60, (0.35, 0.33, 0.24, 0.08), 0.45),
    Group("VIPs", 0.05, (10, 20, 0.6), (0, 14), (180, 900), 150, (0.10, 0.25, 0.40, 0.25), 0.60),
)

_DAY_US = 86_400_000_000


def _days_before(as_of: np.datetime64, days: np.ndarray) -> np.ndarray:
    return as_of.astype("datetime64[us]") - (days * _DAY_US).astype(np.int64).astype("timedelta64[us]")


@dataclass(frozen=True)
class CrmData:
    customers: dict[str, np.ndarray]  # id, email, plan, country, signup_date, gender, marketing_opt_in
    orders: dict[str, np.ndarray]  # customer_id, ordered_at, amount: oldest first
    group: np.ndarray  # each customer's hidden group, an index into GROUPS (not stored in the database)
    frequency: np.ndarray  # each customer's number of orders


def _counts(shares: np.ndarray, n: int) -> np.ndarray:
    """n split by shares in whole numbers (largest remainders), so small n keep the shares too."""
    exact = shares / shares.sum() * n
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return counts


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n unique ids: ID_PREFIX and ID_RANDOM_CHARS random base62 characters."""
    chars = np.empty((n, len(ID_PREFIX) + ID_RANDOM_CHARS), dtype=np.uint8)
    chars[:, : len(ID_PREFIX)] = np.frombuffer(ID_PREFIX, dtype=np.uint8)
    redraw = np.arange(n)
    while len(redraw):
        chars[redraw, len(ID_PREFIX) :] = BASE62[rng.integers(0, len(BASE62), (len(redraw), ID_RANDOM_CHARS))]
        _, first = np.unique(chars.view(f"S{chars.shape[1]}")[:, 0], return_index=True)
        redraw = np.setdiff1d(np.arange(n), first)
    return chars.view(f"S{chars.shape[1]}")[:, 0]


def _pick(rng: np.random.Generator, labels: tuple[str, ...], shares: np.ndarray, size: int) -> np.ndarray:
    return np.array(labels, dtype="S")[rng.choice(len(labels), size=size, p=shares / shares.sum())]


def generate(n: int, seed: int, as_of: np.datetime64) -> CrmData:
    """n customers and their orders, the same for the same n, seed and as_of (UTC)."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.repeat(np.arange(len(GROUPS)), _counts(np.array([g.share for g in GROUPS]), n)))
    ids = _ids(rng, n)
    emails = np.strings.add(np.strings.add(b"customer", np.arange(1, n + 1).astype("S")), b"@example.com")

    plan = np.empty(n, dtype="S10")
    opt_in = np.empty(n, dtype=bool)
    counts = np.zeros(n, dtype=np.int64)
    recency = np.zeros(n)  # days before as_of of the last order
    tenure = np.zeros(n)
    basket = np.zeros(n)
    for g, spec in enumerate(GROUPS):
        members = np.flatnonzero(group == g)
        size = len(members)
        plan[members] = _pick(rng, PLANS, np.array(spec.plans), size)
        opt_in[members] = rng.random(size) < spec.opt_in
        least, median, spread = spec.orders
        if least == 0:
            continue
        drawn = np.rint(rng.lognormal(np.log(median), spread, size)) if spread else np.full(size, least)
        counts[members] = np.clip(drawn, least, MAX_ORDERS)
        recency[members] = rng.uniform(*spec.recency_days, size)
        tenure[members] = rng.uniform(*spec.tenure_days, size)
        basket[members] = rng.lognormal(np.log(spec.basket), BASKET_SPREAD, size)
    ordering = counts > 0
    whales = ordering & (rng.random(n) < WHALE_SHARE)
    basket[whales] *= WHALE_FACTOR

    # Each order's place between the customer's first (0) and last (1) order.
    owner = np.repeat(np.arange(n), counts)
    starts = np.cumsum(counts) - counts
    nth = np.arange(len(owner)) - starts[owner]
    place = np.where(nth == counts[owner] - 1, 1.0, np.where(nth == 0, 0.0, rng.random(len(owner))))
    ordered_at = _days_before(as_of, recency[owner] + (1.0 - place) * tenure[owner])
    amount = np.round(np.clip(basket[owner] * rng.lognormal(0.0, ORDER_NOISE, len(owner)), MIN_AMOUNT, MAX_AMOUNT), 2)
    oldest_first = np.argsort(ordered_at, kind="stable")

    # Signed up some days before the first order; those who never ordered, any day in the span.
    signup_days_ago = recency + tenure + rng.exponential(SIGNUP_GAP_DAYS, n)
    signup_days_ago[~ordering] = rng.uniform(0, SIGNUP_SPAN_DAYS, int((~ordering).sum()))
    signup = _days_before(as_of, signup_days_ago).astype("datetime64[D]")
    customers = {
        "id": ids,
        "email": emails,
        "plan": plan,
        "country": _pick(rng, COUNTRIES, np.array(COUNTRY_SHARES), n),
        "signup_date": signup,
        "gender": _pick(rng, GENDERS, np.array(GENDER_SHARES), n),
        "marketing_opt_in": opt_in,
    }
    orders = {
        "customer_id": ids[owner][oldest_first],
        "ordered_at": ordered_at[oldest_first],
        "amount": amount[oldest_first],
    }
    return CrmData(customers, orders, group, counts)
