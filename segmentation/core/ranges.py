"""Ranges of customer ids for a pass split over workers: contiguous, half-open, covering every
id from the smallest to the largest, of equal width. Ranges of the id's values rather than of
the table's physical blocks, so they keep every row of an id together and map onto a
distributed PostgreSQL's shards when the id is its distribution column (Citus)."""

from __future__ import annotations

import itertools


def id_ranges(smallest: int, largest: int, n: int) -> list[tuple[int, int]]:
    """At most n ranges [start, stop) covering smallest..largest, none empty of ids."""
    if largest < smallest:
        raise ValueError(f"no ids between {smallest} and {largest}")
    span = largest - smallest + 1
    n = max(1, min(n, span))
    bounds = [smallest + span * i // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))
