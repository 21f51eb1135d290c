"""A uniform random sample of customers that does not depend on row order.

Each customer gets a pseudo-random key from (customer_id, random_state); the sample is the
customers with the smallest keys. The same table and random_state always give the same
sample, however PostgreSQL happens to return the rows, and it streams: keep the best
`size` keys seen so far, chunk by chunk."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of id + seed: well mixed, so the smallest keys are a uniform sample."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.int64).view(np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


class HashSample:
    """Keeps the `size` rows with the smallest keys among all rows offered."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.keys = np.empty(0, dtype=np.uint64)
        self.ids = np.empty(0, dtype=np.int64)
        self.columns: dict[str, np.ndarray] = {}
        self.seen = 0
        self._pending: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
        self._pending_rows = 0

    def offer(self, ids: np.ndarray, **columns: np.ndarray) -> None:
        self.seen += len(ids)
        keys = hash_keys(ids, self.seed)
        if len(self.keys) == self.size:
            # Once full, only keys below the largest kept one can ever get in: filtering
            # first keeps the merges small and rare however large the table is.
            keep = keys < self._threshold
            keys, ids = keys[keep], ids[keep]
            columns = {name: values[keep] for name, values in columns.items()}
        self._pending.append((keys, ids, columns))
        self._pending_rows += len(keys)
        if self._pending_rows >= max(1, self.size // 4) or len(self.keys) < self.size:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [p[0] for p in self._pending])
        ids = np.concatenate([self.ids] + [p[1] for p in self._pending])
        names = self._pending[0][2].keys()
        merged = {
            name: np.concatenate(([self.columns[name]] if name in self.columns else []) + [p[2][name] for p in self._pending])
            for name in names
        }
        self._pending, self._pending_rows = [], 0
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keys, ids = keys[keep], ids[keep]
            merged = {name: values[keep] for name, values in merged.items()}
        self.keys, self.ids, self.columns = keys, ids, merged
        self._threshold = self.keys.max() if len(self.keys) else np.uint64(0)

    def result(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The sample sorted by customer id, so what is trained on never depends on row order."""
        self._merge()
        order = np.argsort(self.ids, kind="stable")
        return self.ids[order], {name: values[order] for name, values in self.columns.items()}
