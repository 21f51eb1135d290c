"""A uniform random sample of customers that does not depend on row order.

Each customer gets a pseudo-random key from (customer_id, random_state); the sample is the
customers with the smallest keys. The same table and random_state always give the same
sample, however PostgreSQL happens to return the rows, and it streams: keep the best
`size` keys seen so far, chunk by chunk.

It also splits: the sample of a table read in parts (ranges of ids on Dask workers) is the
sample of the parts' samples. A part need only send the rows whose key is below a limit that
enough rows of the whole table pass (`key_limit`); when fewer than `size` did, the limit was
too low and the parts are read again with a higher one."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_KEYS = 2**64
# A part sends the rows whose key is below the limit where 1.25 times `size` rows are expected:
# a sample of 1,000 rows or more then falls short of `size` (and the parts are read again) only
# when more than a fifth of the rows counted turn out invalid, or by a 7-sigma chance.
LIMIT_MARGIN = 1.25


def hash_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of id + seed: well mixed, so the smallest keys are a uniform sample."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.int64).view(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def key_limit(size: int, rows: int) -> int | None:
    """The key below which a part's rows are sent, for a table of about `rows` rows, so that
    about LIMIT_MARGIN times `size` rows pass; None (every row) when the table is not much
    larger than the sample."""
    if rows <= size * LIMIT_MARGIN:
        return None
    return int(_KEYS * size * LIMIT_MARGIN // rows)


class HashSample:
    """Keeps the `size` rows with the smallest keys among all rows offered. Until more
    than `size` rows have been offered nothing is hashed: a table that fits is kept whole.
    below: only rows whose key is below it are kept (a part of a table, see key_limit)."""

    def __init__(self, size: int, seed: int, below: int | None = None):
        self.size = size
        self.seed = seed
        self.below = None if below is None else np.uint64(below)
        self.keys: np.ndarray | None = None  # None until the rows outgrow the sample
        self.ids = np.empty(0, dtype=np.int64)
        self.columns: dict[str, np.ndarray] = {}
        self.seen = 0
        self._pending: list[tuple[np.ndarray | None, np.ndarray, dict[str, np.ndarray]]] = []
        self._pending_rows = 0

    def offer(self, ids: np.ndarray, **columns: np.ndarray) -> None:
        self.seen += len(ids)
        if self.below is not None:
            keep = hash_keys(ids, self.seed) < self.below
            ids, columns = ids[keep], {name: values[keep] for name, values in columns.items()}
        keys = None
        if self.keys is not None:
            keys = hash_keys(ids, self.seed)
            # Only keys below the largest kept one can ever get in: filtering first keeps
            # the merges small and rare however large the table is.
            keep = keys < self._threshold
            keys, ids = keys[keep], ids[keep]
            columns = {name: values[keep] for name, values in columns.items()}
        self._pending.append((keys, ids, columns))
        self._pending_rows += len(ids)
        if self.keys is None and self.seen > self.size:
            self._pending = [(hash_keys(p_ids, self.seed), p_ids, p_cols) for _, p_ids, p_cols in self._pending]
            self.keys = np.empty(0, dtype=np.uint64)
            self._merge()
        elif self.keys is not None and self._pending_rows >= max(1, self.size // 4):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        names = self._pending[0][2].keys()
        ids = np.concatenate([self.ids] + [p[1] for p in self._pending])
        merged = {
            name: np.concatenate(
                ([self.columns[name]] if name in self.columns else []) + [p[2][name] for p in self._pending]
            )
            for name in names
        }
        if self.keys is not None:
            keys = np.concatenate([self.keys] + [p[0] for p in self._pending])
            if len(keys) > self.size:
                keep = np.argpartition(keys, self.size - 1)[: self.size]
                keys, ids = keys[keep], ids[keep]
                merged = {name: values[keep] for name, values in merged.items()}
            self.keys = keys
            self._threshold = keys.max() if len(keys) else np.uint64(0)
        self._pending, self._pending_rows = [], 0
        self.ids, self.columns = ids, merged

    def result(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The sample sorted by customer id, so what is trained on never depends on row order."""
        self._merge()
        if len(self.ids) < 2 or bool(np.all(self.ids[1:] > self.ids[:-1])):
            return self.ids, self.columns  # a table read in id order needs no sort
        order = np.argsort(self.ids, kind="stable")
        return self.ids[order], {name: values[order] for name, values in self.columns.items()}


class SplitSample:
    """The sample of a table read in parts: each part keeps HashSample(size, seed, below=
    self.below) of its rows and sends it here with how many rows it saw. When the parts are
    all in, `finished` says whether the result is the whole table's sample; if not, the limit
    was too low, and the parts are to be read again with the raised `below` (the last try has
    no limit, so it always ends)."""

    def __init__(self, size: int, seed: int, rows: int):
        """rows: the table's row count; at least its valid rows, which the parts count."""
        self.size, self.seed = size, seed
        self.below = key_limit(size, rows)
        self._restart()

    def _restart(self) -> None:
        self.sample = HashSample(self.size, self.seed)
        self.seen = 0  # rows the parts saw
        self.sent = 0  # rows the parts sent: those below the limit, at most `size` a part

    def add(self, seen: int, ids: np.ndarray, **columns: np.ndarray) -> None:
        self.seen += seen
        self.sent += len(ids)
        self.sample.offer(ids, **columns)

    def finished(self) -> bool:
        # With `size` rows sent, every row of the whole sample was: a part sends all its rows
        # below the limit, or its own `size` smallest, which hold the whole sample's part there.
        if self.below is None or self.sent >= self.size:
            return True
        raised = key_limit(self.size, self.seen)
        self.below = raised if raised is not None and raised > self.below else None
        self._restart()
        return False

    def result(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.sample.result()
