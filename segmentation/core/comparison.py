"""A run's assignments compared with the previous run's, customer by customer, as they are
written, in memory: the previous run's segment of every customer sits in an array indexed by
customer id, so each chunk is compared where it is scored and no second pass over either run
is needed. Only for ids dense enough for such an array (the caller decides), and only while
few customers changed: past `max_changes` it gives up and the SQL comparison takes over."""

from __future__ import annotations

import numpy as np

ABSENT = -1  # no segment: the customer is not in that run
_SEEN = -2  # in the array of the previous run's segments: compared already (each id comes once)

# Every customer whose segment differs between two runs: (customer ids, segment before, segment
# now), ABSENT where the customer is not in that run.
Changes = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Tally:
    """What both comparisons keep as chunks come: the changed customers, until max_changes."""

    def __init__(self, max_changes: int):
        self.max_changes = max_changes
        self._changed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_changed = 0
        self.overflowed = False

    def _tally(self, ids: np.ndarray, before: np.ndarray, segment_ids: np.ndarray) -> None:
        """A chunk's customers with their segment before (ABSENT: new) and now."""
        changed = before != segment_ids
        self._n_changed += int(changed.sum())
        if self._n_changed > self.max_changes:
            self.overflowed = True
            self._changed = []
            return
        self._changed.append((ids[changed], before[changed], segment_ids[changed].astype(np.int32)))

    def _with_removed(self, ids: np.ndarray, before: np.ndarray) -> Changes | None:
        """The changes, with the previous run's customers never seen in this one; None when
        there are more than max_changes."""
        if self.overflowed or self._n_changed + len(ids) > self.max_changes:
            return None
        parts = [*self._changed, (ids, before.astype(np.int32), np.full(len(ids), ABSENT, dtype=np.int32))]
        return (
            np.concatenate([np.empty(0, dtype=np.int64), *(p[0] for p in parts)]).astype(np.int64),
            np.concatenate([np.empty(0, dtype=np.int32), *(p[1] for p in parts)]).astype(np.int32),
            np.concatenate([np.empty(0, dtype=np.int32), *(p[2] for p in parts)]).astype(np.int32),
        )


class Comparison(_Tally):
    def __init__(self, smallest: int, largest: int, max_changes: int, largest_segment_id: int = 32_767):
        super().__init__(max_changes)
        self.smallest = smallest
        # Two bytes a slot while segment ids fit: 200 MB for 100 million ids.
        dtype = np.int16 if largest_segment_id <= np.iinfo(np.int16).max else np.int32
        self.before: np.ndarray = np.full(largest - smallest + 1, ABSENT, dtype=dtype)

    def add_previous(self, ids: np.ndarray, segment_ids: np.ndarray) -> None:
        """The previous run's rows, in any order and chunking."""
        self.before[ids - self.smallest] = segment_ids

    def update(self, ids: np.ndarray, segment_ids: np.ndarray) -> None:
        """A chunk of the new run's rows: each customer once over all chunks."""
        if self.overflowed:
            return
        offset = ids - self.smallest
        inside = (offset >= 0) & (offset < len(self.before))
        before = np.full(len(ids), ABSENT, dtype=np.int32)
        before[inside] = self.before[offset[inside]]
        self.before[offset[inside]] = _SEEN
        self._tally(ids, before, segment_ids)

    def changes(self) -> Changes | None:
        """Every customer whose segment differs, moved or in one run only; None when it gave up."""
        if self.overflowed:
            return None
        removed = np.flatnonzero(self.before >= 0)  # in the previous run, never seen in this one
        return self._with_removed(removed + self.smallest, self.before[removed])


class SortedComparison(_Tally):
    """A Comparison for sparse ids (keys by hash, segmentation.source.customer_keys): the
    previous run's ids sorted, with their segments, each new id looked up by binary search. About
    11 bytes a customer of the previous run, whatever the ids' span."""

    def __init__(self, max_changes: int):
        super().__init__(max_changes)
        self._pieces: list[tuple[np.ndarray, np.ndarray]] = []
        self._ids = np.empty(0, dtype=np.int64)
        self._segments = np.empty(0, dtype=np.int32)
        self._seen = np.empty(0, dtype=bool)
        self._ready = False

    def add_previous(self, ids: np.ndarray, segment_ids: np.ndarray) -> None:
        """The previous run's rows, in any order and chunking, before the first update."""
        self._pieces.append((np.asarray(ids, dtype=np.int64), np.asarray(segment_ids, dtype=np.int32)))

    def _sort(self) -> None:
        if self._ready:
            return
        ids = np.concatenate([np.empty(0, dtype=np.int64), *(p[0] for p in self._pieces)])
        segments = np.concatenate([np.empty(0, dtype=np.int32), *(p[1] for p in self._pieces)])
        self._pieces = []
        # A run's ids are unique (its key), so every sort gives the same order: numpy's default,
        # faster than a stable one (docs/performance.md). One sorted copy at a time, to keep the
        # peak lower.
        order = np.argsort(ids)
        self._ids = ids[order]
        del ids
        self._segments = segments[order]
        self._seen = np.zeros(len(self._ids), dtype=bool)
        self._ready = True

    def update(self, ids: np.ndarray, segment_ids: np.ndarray) -> None:
        """A chunk of the new run's rows: each customer once over all chunks."""
        self._sort()
        if self.overflowed:
            return
        before = np.full(len(ids), ABSENT, dtype=np.int32)
        if len(self._ids):
            # Looked up in sorted order: successive binary searches then walk nearby paths of the
            # sorted ids, which stay in cache; in the chunk's own (random) order each search
            # misses it at almost every step (6.6 times slower on 10M keys).
            order = np.argsort(ids)
            at = np.empty(len(ids), dtype=np.int64)
            at[order] = np.searchsorted(self._ids, ids[order])
            np.minimum(at, len(self._ids) - 1, out=at)
            found = self._ids[at] == ids
            before[found] = self._segments[at[found]]
            self._seen[at[found]] = True
        self._tally(ids, before, segment_ids)

    def changes(self) -> Changes | None:
        """Every customer whose segment differs, moved or in one run only; None when it gave up."""
        self._sort()
        if self.overflowed:
            return None
        removed = ~self._seen
        return self._with_removed(self._ids[removed], self._segments[removed])


def join(parts: list[Changes | None], max_changes: int) -> Changes | None:
    """The changes of disjoint parts of the customers (ranges of ids compared apart) as one;
    None when a part gave up or, together, they pass max_changes."""
    if any(part is None for part in parts):
        return None
    found = [part for part in parts if part is not None]
    if sum(len(part[0]) for part in found) > max_changes:
        return None
    return (
        np.concatenate([np.empty(0, dtype=np.int64), *(p[0] for p in found)]).astype(np.int64),
        np.concatenate([np.empty(0, dtype=np.int32), *(p[1] for p in found)]).astype(np.int32),
        np.concatenate([np.empty(0, dtype=np.int32), *(p[2] for p in found)]).astype(np.int32),
    )


def counts(before: np.ndarray, now: np.ndarray) -> list[tuple[int | None, int | None, int]]:
    """Customers per (segment before, segment now), None for ABSENT: what the comparison from
    changes (core.segments.compare_from_changes) reads."""
    if len(before) == 0:
        return []
    pairs, n = np.unique(np.stack([before, now], axis=1), axis=0, return_counts=True)
    return [
        (None if b == ABSENT else int(b), None if a == ABSENT else int(a), int(c))
        for (b, a), c in zip(pairs.tolist(), n.tolist(), strict=True)
    ]
