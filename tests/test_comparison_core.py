"""The in-memory comparison for sparse ids (keys by hash): SortedComparison finds exactly the
customers the dense Comparison finds, for any previous and new run, in any chunking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentation.core.comparison import ABSENT, Comparison, SortedComparison

pytestmark = pytest.mark.unit

_runs = st.dictionaries(st.integers(-(2**63), 2**63 - 1), st.integers(1, 8), max_size=60)


def _changes(comparison, before: dict[int, int], now: dict[int, int], chunks: int) -> set | None:
    ids = np.array(list(before), dtype=np.int64)
    comparison.add_previous(ids, np.array([before[c] for c in ids], dtype=np.int32))
    order = np.array(list(now), dtype=np.int64)
    for part in np.array_split(order, chunks):
        comparison.update(part, np.array([now[int(c)] for c in part], dtype=np.int32))
    found = comparison.changes()
    return None if found is None else {(int(c), int(b), int(a)) for c, b, a in zip(*found, strict=True)}


@settings(max_examples=200, deadline=None)
@given(
    before=_runs,
    now=_runs,
    shared=st.dictionaries(st.integers(-(2**63), 2**63 - 1), st.integers(1, 8), max_size=30),
    chunks=st.integers(1, 5),
)
def test_sparse_keys_compare_as_the_definition_says(before, now, shared, chunks):
    before = {**before, **shared}
    now = {**now, **{c: s if c % 3 else s % 8 + 1 for c, s in shared.items()}}
    expected = {
        (c, before.get(c, ABSENT), now.get(c, ABSENT))
        for c in set(before) | set(now)
        if before.get(c, ABSENT) != now.get(c, ABSENT)
    }
    assert _changes(SortedComparison(max_changes=10_000), before, now, chunks) == expected


def test_sparse_and_dense_agree_and_both_give_up_past_max_changes():
    rng = np.random.default_rng(3)
    before = {int(c): int(rng.integers(1, 6)) for c in rng.choice(np.arange(0, 4000), 2500, replace=False)}
    now = {c: (s if rng.random() < 0.9 else int(rng.integers(1, 6))) for c, s in before.items() if rng.random() < 0.95}
    now.update({int(c): 2 for c in range(4000, 4050)})
    dense = _changes(Comparison(0, 3999, max_changes=10_000), before, now, 4)
    assert dense is not None and dense == _changes(SortedComparison(max_changes=10_000), before, now, 4)
    assert _changes(SortedComparison(max_changes=10), before, now, 4) is None
