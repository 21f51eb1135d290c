"""Progress at a human pace: about every 10% or every 15 s, whichever comes first, with the
rate and the time left; never one line per chunk."""

import pytest

from segmentation.core.progress import Progress

pytestmark = pytest.mark.unit


def lines(total: int, chunk: int, seconds_per_chunk: float) -> list[tuple[float, str]]:
    progress = Progress("score", "customers assigned", total, start=100.0)
    found = []
    for i, done in enumerate(range(chunk, total + 1, chunk), start=1):
        now = 100.0 + i * seconds_per_chunk
        if line := progress.update(done, now):
            found.append((now - 100.0, line))
    return found


def test_a_fast_pass_reports_every_tenth():
    found = lines(100_000_000, 200_000, 0.01)  # 500 chunks in 5 s
    assert [t for t, _ in found] == pytest.approx([0.5 * i for i in range(1, 10)])
    assert (
        found[0][1] == "score: 10,000,000 of 100,000,000 customers assigned (10%), 20,000,000 a second, about 4 s left"
    )


def test_a_slow_pass_reports_every_fifteen_seconds_and_the_time_left():
    found = lines(100_000_000, 200_000, 0.5)  # 500 chunks in 250 s
    times = [t for t, _ in found]
    assert all(0 < b - a <= 15 for a, b in zip([0.0, *times], times))
    assert 16 <= len(found) <= 26  # not 499
    assert found[0][1] == (
        "score: 6,000,000 of 100,000,000 customers assigned (6%), 400,000 a second, about 3 min 55 s left"
    )
    assert found[-1][1].endswith("about 10 s left")


def test_hours_and_the_end():
    progress = Progress("generate", "customers", 1_000_000_000, start=0.0)
    assert progress.update(1_000_000, 20.0) == (
        "generate: 1,000,000 of 1,000,000,000 customers (0%), 50,000 a second, about 5 h 33 min left"
    )
    assert progress.update(1_000_000_000, 40.0) is None  # the pass's own last line says it is done
