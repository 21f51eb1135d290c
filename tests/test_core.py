"""The pure core: no database, no Prefect."""

import itertools

import numpy as np
import pandas as pd
import pytest

from segmentation.core import model, run_text
from segmentation.core.binary_copy import HEADER, TRAILER, Decoder, encode_rows
from segmentation.core.comparison import ABSENT, Comparison, counts, join
from segmentation.core.features import GENDER_FEMALE, GENDER_MALE, GENDER_UNKNOWN, gender_codes
from segmentation.core.ranges import id_ranges
from segmentation.core.sampling import HashSample, SplitSample
from segmentation.core.segment_stats import SegmentStats
from segmentation.core.synthetic import generate
from segmentation.errors import SegmentationError

pytestmark = pytest.mark.unit

FIELDS = [("customer_id", "int8"), ("x", "float8"), ("g", "int2")]


def test_binary_copy_round_trip_in_arbitrary_pieces():
    ids = np.arange(1, 1001, dtype=np.int64) * 7
    x = np.linspace(-3, 3, 1000)
    g = (ids % 3).astype(np.int16)
    stream = HEADER + encode_rows(FIELDS, {"customer_id": ids, "x": x, "g": g}) + TRAILER
    decoder = Decoder(FIELDS)
    parts = []
    for start in range(0, len(stream), 333):  # pieces that cut rows and the header
        parts.append(decoder.feed(stream[start : start + 333]))
    decoder.finish()
    got = {name: np.concatenate([p[name] for p in parts]) for name, _ in FIELDS}
    assert np.array_equal(got["customer_id"], ids)
    assert np.array_equal(got["x"], x)
    assert np.array_equal(got["g"], g)


def test_binary_copy_rejects_null_fields():
    row = encode_rows(FIELDS, {"customer_id": np.array([1]), "x": np.array([1.0]), "g": np.array([0])})
    broken = bytearray(row)
    broken[2 + 4 + 8 : 2 + 4 + 8 + 4] = (-1).to_bytes(4, "big", signed=True)  # x's length: NULL
    with pytest.raises(ValueError, match="field x is NULL"):
        Decoder(FIELDS).feed(HEADER + bytes(broken) + TRAILER)


def test_hash_sample_is_uniform_sized_reproducible_and_order_independent():
    ids = np.arange(10_000, dtype=np.int64)
    values = ids.astype(float) * 2
    a = HashSample(500, seed=42)
    for chunk in np.array_split(np.arange(10_000), 7):
        a.offer(ids[chunk], v=values[chunk])
    b = HashSample(500, seed=42)
    shuffled = np.random.default_rng(1).permutation(10_000)
    for chunk in np.array_split(shuffled, 3):
        b.offer(ids[chunk], v=values[chunk])
    ids_a, cols_a = a.result()
    ids_b, _cols_b = b.result()
    assert len(ids_a) == 500 and a.seen == 10_000
    assert np.array_equal(ids_a, ids_b)
    assert np.array_equal(cols_a["v"], ids_a * 2.0)
    assert np.all(np.diff(ids_a) > 0)
    # Uniform: each tenth of the id range holds about a tenth of the sample.
    counts = np.bincount(ids_a // 1000, minlength=10)
    assert counts.min() > 25 and counts.max() < 80
    c = HashSample(500, seed=7)
    c.offer(ids, v=values)
    assert not np.array_equal(c.result()[0], ids_a)


def test_hash_sample_that_outgrows_its_size_late_picks_the_same_rows():
    ids = np.arange(1, 20_001, dtype=np.int64) * 3
    late = HashSample(12_000, seed=5)  # full only after the 13th chunk
    for chunk in np.array_split(ids, 20):
        late.offer(chunk, v=chunk * 0.5)
    at_once = HashSample(12_000, seed=5)
    at_once.offer(ids[::-1].copy(), v=ids[::-1] * 0.5)
    assert np.array_equal(late.result()[0], at_once.result()[0])
    assert np.array_equal(late.result()[1]["v"], late.result()[0] * 0.5)
    exact = HashSample(20_000, seed=5)  # exactly its size: kept whole, never hashed
    for chunk in np.array_split(ids, 3):
        exact.offer(chunk, v=chunk * 0.5)
    assert exact.keys is None and np.array_equal(exact.result()[0], ids)


def test_hash_sample_keeps_everything_below_its_size():
    s = HashSample(100, seed=0)
    s.offer(np.array([5, 3, 9], dtype=np.int64), v=np.array([1.0, 2.0, 3.0]))
    ids, cols = s.result()
    assert ids.tolist() == [3, 5, 9] and cols["v"].tolist() == [2.0, 1.0, 3.0]


def split_sample(size, seed, rows, valid_ids, parts):
    """SplitSample over `parts` parts of the valid ids, read again until it is finished, as
    the Dask extract does; returns it and how many reads it took."""
    split = SplitSample(size, seed, rows)
    for reads in itertools.count(1):
        for part in np.array_split(valid_ids, parts):
            own = HashSample(size, seed, below=split.below)
            for chunk in np.array_split(part, 3):
                own.offer(chunk, v=chunk * 0.5)
            ids, columns = own.result()
            split.add(own.seen, ids, **columns)
        if split.finished():
            return split, reads
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("size", "rows", "valid_share", "parts", "reads"),
    [
        (2_000, 40_000, 1.0, 8, 1),  # the usual night: one read, each part sending about 1/8 of 1.25 x size
        (2_000, 40_000, 0.7, 8, 2),  # 30% invalid: too few rows pass the limit made from the row count
        (2_000, 40_000, 1.0, 1, 1),  # one part
        (5_000, 5_500, 1.0, 4, 1),  # about the sample's size: no limit, every row sent
        (5_000, 8_000, 0.5, 4, 2),  # more rows than the sample, fewer valid ones: the whole table, read twice
        (3, 40, 1.0, 4, None),  # a tiny sample: a read or more, never a wrong one
    ],
)
def test_a_sample_taken_in_parts_is_the_whole_tables_sample(size, rows, valid_share, parts, reads):
    rng = np.random.default_rng(size + rows)
    valid_ids = np.sort(rng.choice(10 * rows, int(rows * valid_share), replace=False)).astype(np.int64)
    whole = HashSample(size, seed=11)
    whole.offer(valid_ids, v=valid_ids * 0.5)
    split, n_reads = split_sample(size, 11, rows, valid_ids, parts)
    ids, columns = split.result()
    assert np.array_equal(ids, whole.result()[0]) and np.array_equal(columns["v"], ids * 0.5)
    assert len(ids) == min(size, len(valid_ids)) and split.seen == len(valid_ids)
    assert reads is None or n_reads == reads
    if reads == 1 and split.below is not None:  # each part sent only what passed the limit
        assert size <= split.sent < 1.5 * size


def three_blobs(n_each=100, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 10], [0, 10]])
    return np.concatenate([rng.normal(c, 0.5, (n_each, 2)) for c in centres]), centres


def test_select_k_finds_three_blobs_and_reports_every_candidate():
    X, _ = three_blobs()
    Z = model.Scaler.fit(X).transform(X)
    k, candidates, _ = model.select_k(
        Z, 2, 6, random_state=0, n_init=4, selection_sample_size=10_000, silhouette_sample_size=10_000
    )
    assert k == 3
    assert [c.k for c in candidates] == [2, 3, 4, 5, 6]
    inertias = [c.inertia for c in candidates]
    assert all(a > b for a, b in itertools.pairwise(inertias))
    assert max(candidates, key=lambda c: c.silhouette).k == 3


@pytest.mark.parametrize("case", ["random", "singleton", "duplicates"])
def test_silhouette_score_equals_sklearns(case):
    from scipy.spatial.distance import cdist
    from sklearn.metrics import silhouette_score as sklearn_silhouette

    rng = np.random.default_rng(3)
    Z, labels = rng.normal(size=(700, 3)), rng.integers(0, 4, 700)
    if case == "singleton":
        labels[5] = 9  # a segment of one customer scores 0
    if case == "duplicates":
        Z = np.repeat(rng.normal(size=(70, 2)), 10, axis=0)  # a = b = 0 for some customers
        labels = np.repeat(np.arange(70) % 3, 10)
    # On exact distances the two agree to rounding; sklearn's own distances (by the dot
    # product) are off by about 1e-11 for duplicate points.
    exact = sklearn_silhouette(cdist(Z, Z), labels, metric="precomputed")
    assert model.silhouette_score(Z, labels, block_rows=64) == pytest.approx(exact, abs=1e-12)
    assert model.silhouette_score(Z, labels) == pytest.approx(sklearn_silhouette(Z, labels), abs=1e-9)


def test_fit_with_starts_compared_on_a_sample_matches_the_full_fit_and_is_reproducible():
    rng = np.random.default_rng(0)
    centres = rng.uniform(-10, 10, (6, 3))
    X = np.concatenate([rng.normal(c, rng.uniform(0.8, 2.5), (4000, 3)) for c in centres])
    Z = model.Scaler.fit(X).transform(X)
    full = model.fit_kmeans(Z, 6, random_state=1, n_init=10)
    sampled = model.fit_kmeans(Z, 6, random_state=1, n_init=10, start_sample_size=3000)
    again = model.fit_kmeans(Z, 6, random_state=1, n_init=10, start_sample_size=3000)
    assert np.array_equal(sampled.cluster_centers_, again.cluster_centers_)
    assert abs(sampled.inertia_ - full.inertia_) / full.inertia_ < 1e-4
    match = np.abs(sampled.cluster_centers_[:, None, :] - full.cluster_centers_[None]).sum(-1).min(1)
    assert match.max() < 0.01
    # The start really came from the sample: one refinement from it, not n_init full fits.
    start = model.start_centers(Z, 6, 1, 10, 3000)
    assert np.array_equal(model.fit_kmeans(Z, 6, 1, 10, init=start).cluster_centers_, sampled.cluster_centers_)


def test_small_fits_run_on_one_thread_and_large_ones_on_all():
    from threadpoolctl import threadpool_info

    def openmp_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"}

    before = openmp_threads()
    with model._threads_for(model.ONE_THREAD_MAX_ROWS):
        assert openmp_threads() == {1}
    with model._threads_for(model.ONE_THREAD_MAX_ROWS + 1):
        assert openmp_threads() == before
    assert openmp_threads() == before


def test_scaler_round_trip_gives_centroids_in_original_units():
    X, centres = three_blobs(n_each=200)
    scaler = model.Scaler.fit(X)
    fitted = model.fit_kmeans(scaler.transform(X), 3, random_state=0, n_init=4)
    original = scaler.inverse(fitted.cluster_centers_)
    found = sorted(map(tuple, np.round(original)))
    assert found == sorted(map(tuple, centres.astype(float)))


def test_constant_feature_does_not_divide_by_zero():
    X = np.column_stack([np.arange(10.0), np.full(10, 5.0)])
    scaler = model.Scaler.fit(X)
    assert np.all(np.isfinite(scaler.transform(X)))
    assert np.allclose(scaler.inverse(scaler.transform(X)), X)


def test_assign_in_chunks_equals_assign_in_one_piece():
    X, _ = three_blobs(n_each=1000)
    Z = model.Scaler.fit(X).transform(X)
    centers = model.fit_kmeans(Z, 3, 0, 2).cluster_centers_
    whole_labels, whole_dist = model.assign(centers, Z)
    parts = [model.assign(centers, Z[i : i + 77]) for i in range(0, len(Z), 77)]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole_labels)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole_dist)
    expected = np.sqrt(((Z[:, None, :] - centers[None]) ** 2).sum(-1)).min(1)
    assert np.allclose(whole_dist, expected)


@pytest.mark.parametrize(
    "n, n_clusters, k_min, k_max, message",
    [
        (3, 5, 2, 10, "only 3 valid customers for 5 clusters"),
        (2, None, 2, 10, "only 2 valid customers, too few to choose k"),
        (100, None, 5, 3, "k range 5..3 is invalid"),
        (100, 1, 2, 10, "n_clusters must be at least 2"),
    ],
)
def test_check_k_refuses_impossible_requests(n, n_clusters, k_min, k_max, message):
    with pytest.raises(SegmentationError, match=message):
        model.check_k(n, n_clusters, k_min, k_max)


def test_check_k_caps_k_max_below_the_customer_count():
    assert model.check_k(6, None, 2, 10) == (2, 5)
    assert model.check_k(6, 4, 2, 10) == (4, 4)


def test_identical_customers_are_refused():
    Z = np.zeros((50, 3))
    with pytest.raises(SegmentationError, match="all 50 valid customers have identical features"):
        model.check_not_degenerate(Z, 3)
    two = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 25, axis=0)
    with pytest.raises(SegmentationError, match="only 2 distinct customers for 3 clusters"):
        model.check_not_degenerate(two, 3)
    model.check_not_degenerate(two, 2)


def test_streamed_segment_stats_equal_direct_computation():
    rng = np.random.default_rng(3)
    X = rng.normal(50, 10, (1000, 2))
    labels = rng.integers(0, 4, 1000)
    gender = rng.integers(0, 3, 1000).astype(np.int16)
    stats = SegmentStats(4, ["a", "b"])
    for idx in np.array_split(np.arange(1000), 9):
        stats.update(labels[idx], X[idx], gender[idx])
    frame = pd.DataFrame({"s": labels, "a": X[:, 0], "b": X[:, 1], "g": gender})
    centroids = stats.centroids(np.zeros((4, 2)))
    for s in range(4):
        part = frame[frame.s == s]
        for feature in ("a", "b"):
            row = centroids[(centroids.segment_id == s + 1) & (centroids.feature == feature)].iloc[0]
            assert row["mean"] == pytest.approx(part[feature].mean(), rel=1e-12)
            assert row["stddev"] == pytest.approx(part[feature].std(ddof=1), rel=1e-9)
            assert row["min"] == part[feature].min() and row["max"] == part[feature].max()
    segments = stats.segments(has_gender=True)
    assert segments["n_customers"].tolist() == np.bincount(labels).tolist()
    assert segments["share"].sum() == pytest.approx(1.0)
    first = frame[frame.s == 0]
    assert segments.loc[0, "share_female"] == pytest.approx((first.g == GENDER_FEMALE).mean())
    assert segments.loc[0, "share_unknown_gender"] == pytest.approx((first.g == GENDER_UNKNOWN).mean())
    assert segments["segment_id"].tolist() == [1, 2, 3, 4]


def test_segment_stats_of_parts_merge_into_those_of_the_whole():
    """What the Dask path does: each range its own figures, merged; a part may miss a segment."""
    rng = np.random.default_rng(4)
    X = rng.normal(50, 10, (3000, 3))
    labels = rng.integers(0, 5, 3000)
    labels[:700] = np.where(labels[:700] == 4, 0, labels[:700])  # segment 4 absent from the first part
    gender = rng.integers(0, 3, 3000).astype(np.int16)
    whole = SegmentStats(5, ["a", "b", "c"])
    whole.update(labels, X, gender)
    merged = SegmentStats(5, ["a", "b", "c"])
    for idx in (np.arange(0, 700), np.arange(700, 701), np.arange(701, 3000)):
        part = SegmentStats(5, ["a", "b", "c"])
        part.update(labels[idx], X[idx], gender[idx])
        merged.merge(part)
    merged.merge(SegmentStats(5, ["a", "b", "c"]))  # an empty range
    assert merged.count.tolist() == whole.count.tolist() and merged.gender.tolist() == whole.gender.tolist()
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-10)
    assert (merged.min == whole.min).all() and (merged.max == whole.max).all()
    with pytest.raises(ValueError, match="cannot be merged"):
        merged.merge(SegmentStats(4, ["a", "b", "c"]))


def test_id_ranges_cover_every_id_once_in_equal_widths():
    assert id_ranges(1, 100, 4) == [(1, 26), (26, 51), (51, 76), (76, 101)]
    assert id_ranges(5, 7, 10) == [(5, 6), (6, 7), (7, 8)]  # never an empty range
    assert id_ranges(-3, -3, 2) == [(-3, -2)]
    ranges = id_ranges(10, 1_000_003, 7)
    assert ranges[0][0] == 10 and ranges[-1][1] == 1_000_004
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert max(r[1] - r[0] for r in ranges) - min(r[1] - r[0] for r in ranges) <= 1
    with pytest.raises(ValueError):
        id_ranges(2, 1, 3)


def test_gender_is_normalised_from_any_case_and_spaces():
    codes = gender_codes([" Female", "MALE ", "female", "x", None, "", "Male", "F", " m ", "f", "M", "1", "Non-binary"])
    assert codes.tolist() == [
        GENDER_FEMALE,
        GENDER_MALE,
        GENDER_FEMALE,
        GENDER_UNKNOWN,
        GENDER_UNKNOWN,
        GENDER_UNKNOWN,
        GENDER_MALE,
        GENDER_FEMALE,
        GENDER_MALE,
        GENDER_FEMALE,
        GENDER_MALE,
        GENDER_UNKNOWN,
        GENDER_UNKNOWN,
    ]


def test_gender_shares_are_null_not_zero_when_no_gender_was_recognised():
    labels = np.array([0, 0, 1, 1, 1])
    X = np.arange(5.0)[:, None]
    unread = SegmentStats(3, ["a"])
    unread.update(labels, X, np.full(5, GENDER_UNKNOWN, dtype=np.int16))
    assert unread.no_gender_recognised
    frame = unread.segments(has_gender=True)
    assert frame[["share_female", "share_male"]].isna().all().all()
    assert frame["share_unknown_gender"].tolist() == [1.0, 1.0, 0.0]  # the third segment is empty
    # No gender column: all three NULL, as before.
    assert unread.segments(has_gender=False)[["share_female", "share_male", "share_unknown_gender"]].isna().all().all()

    # One recognised customer is enough for real shares, 0 included.
    one = SegmentStats(3, ["a"])
    one.update(labels, X, np.array([GENDER_UNKNOWN] * 4 + [GENDER_MALE], dtype=np.int16))
    assert not one.no_gender_recognised
    shares = one.segments(has_gender=True)
    assert shares["share_female"].tolist() == [0.0, 0.0, 0.0]
    assert shares["share_male"].tolist() == pytest.approx([0.0, 1 / 3, 0.0])
    assert not SegmentStats(3, ["a"]).no_gender_recognised  # no customers: nothing to warn about


def test_a_gender_column_with_no_value_recognised_is_one_warning_line():
    run = {"run_id": 3, "status": "published", "source_table": "crm.people", "features": ["age"], "k": 2}
    unread = SegmentStats(2, ["age"])
    unread.update(np.array([0, 1]), np.array([[30.0], [40.0]]), np.full(2, GENDER_UNKNOWN, dtype=np.int16))
    read = SegmentStats(2, ["age"])
    read.update(np.array([0, 1]), np.array([[30.0], [40.0]]), np.array([GENDER_UNKNOWN, GENDER_MALE], dtype=np.int16))
    warning = (
        "warning: no customer's gender in crm.people is one the run recognises (Female, F, Male or M, in any case), "
        "so share_female and share_male are NULL; recode the column (or read the source through a view that does) "
        "to report gender shares"
    )
    lines = run_text.run_line(run, unread.segments(has_gender=True)).splitlines()
    assert lines[1:] == [warning]
    assert run_text.summary_markdown(run, unread.segments(has_gender=True), pd.DataFrame()).count(warning) == 1
    # Shares read (0% female included), no gender column, no segments, or no segments given: no warning.
    for segments in (read.segments(has_gender=True), unread.segments(has_gender=False), pd.DataFrame(), None):
        assert run_text.run_line(run, segments).splitlines()[1:] == []


def test_synthetic_customers_are_valid_and_reproducible():
    a = generate(5000, seed=1, first_id=101)
    b = generate(5000, seed=1, first_id=101)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["customer_id"][0] == 101 and a["customer_id"][-1] == 5100
    assert a["age"].min() >= 18 and a["age"].max() <= 75
    assert a["spending_score"].min() >= 1 and a["spending_score"].max() <= 100
    assert a["annual_income"].min() >= 0
    # Mall-like: five groups in income x spending, recovered by KMeans.
    X = np.column_stack([a["annual_income"], a["spending_score"]])
    Z = model.Scaler.fit(X).transform(X)
    k, _, _ = model.select_k(Z, 2, 8, random_state=0, n_init=4, selection_sample_size=5000, silhouette_sample_size=3000)
    assert k == 5


def test_the_in_memory_comparison_finds_exactly_the_changed_customers():
    rng = np.random.default_rng(5)
    before = {int(c): int(rng.integers(1, 6)) for c in rng.choice(np.arange(100, 5000), 3000, replace=False)}
    now = {c: (s if rng.random() < 0.9 else int(rng.integers(1, 6))) for c, s in before.items() if rng.random() < 0.95}
    now.update(
        {int(c): int(rng.integers(1, 6)) for c in (list(range(5000, 5100)) + list(range(1, 50)))}
    )  # added, outside
    comparison = Comparison(min(before), max(before), max_changes=10_000)
    ids = np.array(list(before))
    comparison.add_previous(ids, np.array([before[c] for c in ids], dtype=np.int32))
    order = rng.permutation(np.array(list(now)))
    for part in np.array_split(order, 7):
        comparison.update(part, np.array([now[c] for c in part], dtype=np.int32))
    found = comparison.changes()
    assert found is not None
    got = {(int(c), int(b), int(a)) for c, b, a in zip(*found, strict=True)}
    expected = {
        (c, before.get(c, ABSENT), now.get(c, ABSENT))
        for c in set(before) | set(now)
        if before.get(c, ABSENT) != now.get(c, ABSENT)
    }
    assert got == expected and len(found[0]) == len(expected)
    pairs = counts(found[1], found[2])
    assert sum(n for _, _, n in pairs) == len(expected)
    assert (
        all(b != a for b, a, _ in pairs) and any(b is None for b, _, _ in pairs) and any(a is None for _, a, _ in pairs)
    )
    # Past max_changes it gives up, for the SQL comparison to take over.
    small = Comparison(min(before), max(before), max_changes=10)
    small.add_previous(ids, np.array([before[c] for c in ids], dtype=np.int32))
    small.update(order, np.array([now[c] for c in order], dtype=np.int32))
    assert small.changes() is None
    # Compared in ranges of the new run's ids (as on Dask workers), with the previous run's
    # customers outside them all removed: the same changes, joined. Here the new run has no id
    # below 300, so some of the previous run's are outside the ranges.
    later = {c: s for c, s in now.items() if c >= 300}
    expected = {
        (c, before.get(c, ABSENT), later.get(c, ABSENT))
        for c in set(before) | set(later)
        if before.get(c, ABSENT) != later.get(c, ABSENT)
    }
    parts: list = []
    later_ids = np.array(sorted(later))
    for start, stop in id_ranges(int(later_ids[0]), int(later_ids[-1]), 4):
        part = Comparison(start, stop - 1, max_changes=10_000)
        inside = ids[(ids >= start) & (ids < stop)]
        part.add_previous(inside, np.array([before[c] for c in inside], dtype=np.int32))
        for chunk in np.array_split(rng.permutation(later_ids[(later_ids >= start) & (later_ids < stop)]), 3):
            part.update(chunk, np.array([later[c] for c in chunk], dtype=np.int32))
        parts.append(part.changes())
    outside = ids[(ids < later_ids[0]) | (ids > later_ids[-1])]
    assert len(outside) > 0
    parts.append((outside, np.array([before[c] for c in outside], dtype=np.int32), np.full(len(outside), ABSENT)))
    joined = join(parts, max_changes=10_000)
    assert joined is not None
    assert {(int(c), int(b), int(a)) for c, b, a in zip(*joined, strict=True)} == expected
    assert len(joined[0]) == len(expected)
    assert join([*parts, None], max_changes=10_000) is None  # a range gave up
    assert join(parts, max_changes=len(expected) - 1) is None  # together too many


def test_dask_settings_are_checked_when_read(monkeypatch):
    from segmentation import settings

    monkeypatch.setenv("SEGMENTATION_DASK_WORKERS", "2")
    assert settings.Settings.from_env().dask_workers == 2
    monkeypatch.setenv("SEGMENTATION_DASK_ADDRESS", "tcp://scheduler:8786")
    with pytest.raises(SegmentationError, match="both set"):
        settings.Settings.from_env()
    monkeypatch.delenv("SEGMENTATION_DASK_WORKERS")
    monkeypatch.setattr(settings, "find_spec", lambda name: None)  # a base install, without the dask extra
    with pytest.raises(
        SegmentationError, match=r"prefect-dask is not installed; pip install 'customer-segmentation\[dask\]'"
    ):
        settings.Settings.from_env()


def test_the_report_says_why_a_log1p_centroid_is_below_the_segments_mean():
    stats = SegmentStats(2, ["monetary"])
    stats.update(np.array([0, 1]), np.array([[30.0], [4000.0]]), None)
    run = {"run_id": 4, "status": "published", "source_table": "crm.customer_rfm", "features": ["monetary"], "k": 2}
    logged = {**run, "params": {"features": [{"column": "monetary", "transform": "log1p"}, "frequency"]}}
    text = run_text.summary_markdown(logged, stats.segments(has_gender=False), pd.DataFrame())
    assert "Centroids in original units. For `monetary` (log1p) the centroid is the mean of ln(1 + x)" in text
    for plain in (run, {**run, "params": {"features": ["monetary:clip=0.99"]}}):
        assert "Centroids in original units.\n" in run_text.summary_markdown(
            plain, stats.segments(has_gender=False), pd.DataFrame()
        )
