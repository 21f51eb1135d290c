"""Progress of a long pass at a human pace: a line about every 10% of the way or every 15
seconds, whichever comes first, each with the rate and the time left, instead of one per
chunk (1,000 lines at 100 million customers, every one sent to the Prefect API).

Pure: the caller passes the clock's readings, so the pace is tested without waiting."""

from __future__ import annotations

STEP = 0.10  # of the total
INTERVAL = 15.0  # seconds


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """`update(done, now)` returns the line to show when one is due, else None. `what` names
    the pass and `unit` what is counted, e.g. Progress("score", "customers assigned", total)."""

    def __init__(
        self, what: str, unit: str, total: int, *, start: float, step: float = STEP, interval: float = INTERVAL
    ):
        self.what, self.unit, self.total = what, unit, total
        self.start, self.step, self.interval = start, step, interval
        self._last_time = start
        self._steps_reported = 0  # whole steps of the way reported so far

    def update(self, done: int, now: float) -> str | None:
        if done >= self.total or self.total <= 0:
            return None  # the pass's own last line says it is done
        share = done / self.total
        steps = int(share / self.step + 1e-9)  # 0.3 / 0.1 is 2.9999999999999996
        if steps <= self._steps_reported and now - self._last_time < self.interval:
            return None
        self._last_time, self._steps_reported = now, max(steps, self._steps_reported)
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", about {_duration((self.total - done) / rate)} left" if rate > 0 else ""
        return f"{self.what}: {done:,} of {self.total:,} {self.unit} ({share:.0%}), {rate:,.0f} a second{left}"
