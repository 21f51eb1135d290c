"""The configured nightly deployments: a YAML file listing segmentations, each with its flow
parameters and its schedule, read and checked whole before anything is registered
(`segmentation serve --config FILE`, `segmentation deploy --config FILE`, or SEGMENTATION_CONFIG):

    segmentations:
      - name: rfm
        schedule: {cron: "0 3 * * *", timezone: Europe/Berlin}
        parameters: {source_table: crm.customer_rfm, id_column: id, features: [recency_days, monetary]}

Every mistake a person can make in the file is one line naming where it is and what would be
right (ConfigError.problems), all of them at once. The parameters are checked against the flow's
own signature (names and types, as the flow validates them when it runs) and passed to it as
they are, with `segmentation` set to the entry's name. docs/configuration.md describes the file."""

from __future__ import annotations

import os
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segmentation.errors import SegmentationError
from segmentation.segmentations import check_name

CONFIG_ENV = "SEGMENTATION_CONFIG"
DEFAULT_TIMEZONE = "UTC"
ENTRY_KEYS = ("name", "schedule", "parameters")
SCHEDULE_KEYS = ("cron", "timezone")


class ConfigError(SegmentationError):
    """The file's problems, one line each; the message is those lines."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class Deployed:
    """One segmentation of the file: its deployment customer-segmentation/<name>."""

    name: str
    schedule: Schedule
    parameters: dict[str, Any] = field(default_factory=dict)

    def flow_parameters(self) -> dict[str, Any]:
        """What its deployment passes to the flow: the file's parameters as they are, and the
        segmentation."""
        return {**self.parameters, "segmentation": self.name}


def config_path(given: str | None) -> Path | None:
    """The file: the one given (--config), else SEGMENTATION_CONFIG's, else None."""
    chosen = given or (os.environ.get(CONFIG_ENV) or "").strip()
    return Path(chosen) if chosen else None


def load(path: Path) -> list[Deployed]:
    """Read and check the whole file; ConfigError with every problem, one line each."""
    import yaml

    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [f"{where}: cannot read it ({exc.strerror}); give the path of the segmentations file"]
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise ConfigError([f"{where}: not valid YAML{at}: {problem}"]) from None
    return parse(document, where)


def parse(
    document: object, where: str = "the configuration", check_parameters: Callable[[dict], list[str]] | None = None
) -> list[Deployed]:
    """Check a parsed document; ConfigError with every problem, one line each. check_parameters:
    a function returning the problems of one entry's parameters (default: the flow's own check)."""
    check = check_parameters or flow_parameter_problems
    problems: list[str] = []
    if not isinstance(document, dict) or "segmentations" not in document:
        raise ConfigError(
            [
                f"{where}: expected a mapping with the key segmentations: a list of segmentations (see docs/configuration.md)"
            ]
        )
    for key in document:
        if key != "segmentations":
            problems.append(f"{where}: unknown key {key!r} at the top; the only one is segmentations")
    entries = document["segmentations"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError([*problems, f"{where}: segmentations must be a list of at least one segmentation"])
    found: list[Deployed] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        here = f"{where}: segmentation {number}"
        if not isinstance(entry, dict):
            problems.append(f"{here}: expected a mapping with the keys {', '.join(ENTRY_KEYS)}")
            continue
        name = entry.get("name")
        if isinstance(name, str):
            here = f"{where}: segmentation {number} ({name})"
        entry_problems = _entry_problems(entry, here, check)
        if isinstance(name, str) and name in seen:
            entry_problems.append(f"{here}: the name {name} is taken by segmentation {seen[name]}; names must differ")
        if isinstance(name, str):
            seen.setdefault(name, number)
        problems += entry_problems
        if not entry_problems:
            schedule = entry["schedule"]
            found.append(
                Deployed(
                    str(name),
                    Schedule(" ".join(str(schedule["cron"]).split()), schedule.get("timezone", DEFAULT_TIMEZONE)),
                    dict(entry.get("parameters") or {}),
                )
            )
    if problems:
        raise ConfigError(problems)
    return found


def _entry_problems(entry: dict, here: str, check: Callable[[dict], list[str]]) -> list[str]:
    problems = [
        f"{here}: unknown key {key!r}; the keys are {', '.join(ENTRY_KEYS)}" for key in entry if key not in ENTRY_KEYS
    ]
    if "name" not in entry:
        problems.append(f"{here}: no name; give each segmentation one, e.g. name: rfm")
    else:
        try:
            check_name(entry["name"])
        except SegmentationError as exc:
            problems.append(f"{here}: {exc}")
    problems += _schedule_problems(entry.get("schedule"), here)
    parameters = entry.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        problems.append(
            f"{here}: parameters must be a mapping of flow parameters, e.g. {{source_table: crm.customer_rfm}}"
        )
    else:
        if "segmentation" in parameters:
            problems.append(f"{here}: parameters.segmentation is the entry's name; leave it out")
        problems += [f"{here}: {line}" for line in check({k: v for k, v in parameters.items() if k != "segmentation"})]
    return problems


def _schedule_problems(schedule: object, here: str) -> list[str]:
    if schedule is None:
        return [f'{here}: no schedule; give one, e.g. schedule: {{cron: "0 3 * * *", timezone: Europe/Berlin}}']
    if not isinstance(schedule, dict):
        return [f'{here}: schedule must be a mapping, e.g. {{cron: "0 3 * * *", timezone: Europe/Berlin}}']
    problems = [
        f"{here}: unknown key {key!r} in schedule; the keys are {', '.join(SCHEDULE_KEYS)}"
        for key in schedule
        if key not in SCHEDULE_KEYS
    ]
    cron = schedule.get("cron")
    if cron is None:
        problems.append(f'{here}: the schedule has no cron; e.g. cron: "0 3 * * *" for 03:00 daily')
    elif not isinstance(cron, str) or not valid_cron(" ".join(cron.split())):
        problems.append(
            f'{here}: cron {cron!r} is not a cron expression; use five fields, e.g. "0 3 * * *" for 03:00 daily'
        )
    timezone = schedule.get("timezone", DEFAULT_TIMEZONE)
    if not valid_timezone(timezone):
        problems.append(f"{here}: timezone {timezone!r} is not an IANA time zone; use e.g. UTC or Europe/Berlin")
    return problems


def valid_cron(cron: str) -> bool:
    """Checked with Prefect's own schedule model, so what passes here the server accepts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return False
    return len(cron.split()) == 5 or cron.startswith("@")


def valid_timezone(timezone: object) -> bool:
    if not isinstance(timezone, str) or not timezone.strip():
        return False
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def flow_parameter_problems(parameters: Mapping[str, Any]) -> list[str]:
    """The parameters checked against the nightly flow's signature: each unknown name, and each
    value the flow would refuse (validated by its type, as the flow validates it), one line each."""
    import pydantic

    from segmentation.flows.segmentation import customer_segmentation

    hints = typing.get_type_hints(customer_segmentation.fn)
    known = [name for name in customer_segmentation.parameters.properties if name != "segmentation"]
    problems = []
    for name, value in parameters.items():
        if name not in known:
            problems.append(f"unknown parameter {name!r}; the flow's parameters are {', '.join(known)}")
            continue
        try:
            pydantic.TypeAdapter(hints[name]).validate_python(value)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            at = "".join(f"[{p}]" for p in error["loc"])
            problems.append(f"parameter {name}{at}: {error['msg']} (got {value!r})")
    return problems
