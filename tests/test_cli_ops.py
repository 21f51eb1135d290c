"""The operations side of the command line: serve's settings refused in one line, and the
demo loader that only fills an empty table."""

import pytest

from segmentation.cli import main
from segmentation.flows.deployment import ScheduleSettings


@pytest.mark.unit
@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "SEGMENTATION_SCHEDULE",
            "0 2 * *",
            "error: SEGMENTATION_SCHEDULE='0 2 * *' is not a cron expression; use five fields",
        ),
        ("SEGMENTATION_SCHEDULE", "99 2 * * *", "error: SEGMENTATION_SCHEDULE='99 2 * * *' is not a cron expression"),
        (
            "SEGMENTATION_TIMEZONE",
            "Mars/Olympus",
            "error: SEGMENTATION_TIMEZONE='Mars/Olympus' is not an IANA time zone",
        ),
    ],
)
def test_serve_refuses_a_bad_schedule_in_one_line(monkeypatch, capsys, variable, value, message):
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in out + err


@pytest.mark.unit
def test_schedule_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("SEGMENTATION_SCHEDULE", raising=False)
    monkeypatch.delenv("SEGMENTATION_TIMEZONE", raising=False)
    assert ScheduleSettings.from_env() == ScheduleSettings("0 2 * * *", "UTC")
    monkeypatch.setenv("SEGMENTATION_SCHEDULE", "  30 1  * * 1-5 ")
    monkeypatch.setenv("SEGMENTATION_TIMEZONE", "Europe/Berlin")
    assert ScheduleSettings.from_env() == ScheduleSettings("30 1 * * 1-5", "Europe/Berlin")


def test_generate_if_empty_fills_only_an_empty_table(database_url, conn, capsys):
    assert main(["generate", "--rows", "300", "--if-empty"]) == 0
    assert "generated 300 customers" in capsys.readouterr().out
    assert main(["generate", "--rows", "300", "--if-empty"]) == 0
    assert "public.customers already has customers; nothing generated" in capsys.readouterr().out
    assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 300
    assert main(["generate", "--rows", "10", "--if-empty", "--table", "public.nothere"]) == 1
    assert "nothere" in capsys.readouterr().err
