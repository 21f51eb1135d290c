"""How a run ended, as one value: what the nightly flow and the approve-run flow hand to
`segmentation.tasks.conclude`, which turns it into its consequences (report, retention, event,
the flow run's state and return value) in one place. No database or Prefect here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from segmentation.segmentations import DEFAULT

Status = Literal["published", "staged", "rejected", "failed"]
KEPT: tuple[Status, ...] = ("published", "staged", "rejected")  # complete runs: reported and kept

# The figures a run's result and event carry, beside run_id and status.
FIGURES = ("k", "n_customers", "n_quarantined", "inertia", "silhouette", "churn")


@dataclass(frozen=True)
class Outcome:
    status: Status
    run_id: int | None  # None: the run failed before it was recorded
    source_table: str
    figures: dict[str, Any] = field(default_factory=dict)  # FIGURES, those known
    quality_issues: tuple[str, ...] = ()
    forced: bool = False
    # Why it did not publish (the gate's verdict, a failure), then each later sentence about it
    # (a person's decision), each a sentence of its own.
    reasons: tuple[str, ...] = ()
    segmentation: str = DEFAULT

    @property
    def kept(self) -> bool:
        return self.status in KEPT and self.run_id is not None

    @property
    def message(self) -> str | None:
        """The reasons as one text, each a sentence of its own: the flow run's state message,
        the event's error."""
        *earlier, last = self.reasons or ("",)
        return " ".join([*(_sentence(r) for r in earlier), last.strip()]) or None

    def also(self, sentence: str) -> Outcome:
        """The same outcome with one more sentence about it."""
        return replace(self, reasons=(*self.reasons, sentence))

    def result(self) -> dict[str, Any]:
        """The flow run's return value."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "segmentation": self.segmentation,
            **{key: self.figures.get(key) for key in FIGURES},
            "forced": self.forced,
            "quality_issues": list(self.quality_issues),
        }

    def payload(self) -> dict[str, Any]:
        """What the run's event carries (segmentation.events.PAYLOAD_KEYS picks from it)."""
        return {**self.result(), "source_table": self.source_table, "error": self.message}


def gate_verdict(run_id: int, issues: Sequence[str]) -> str:
    """The quality gate's verdict on a run, as the first sentence of its outcome."""
    return f"quality gate rejected run {run_id}: {'; '.join(issues)}"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."
