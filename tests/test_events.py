"""Events and alerts against a real Prefect server: every run emits segmentation.run.<outcome>
with its figures, and `segmentation alerts install` makes the server notify a webhook (here an
HTTP receiver started by the test) on every rejected or failed run."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from segmentation.cli import main
from segmentation.events import AUTOMATION_NAME
from segmentation.loading import generate_customers
from segmentation.segmentations import view_names
from support.prefect_server import PREFECT_AUTH, base_env, prefect_client_settings
from support.processes import start_flow_process, wait_for

# With pytest-xdist, the tests of the session's real Prefect server run on one worker: one server starts.
pytestmark = pytest.mark.xdist_group("prefect-server")

FAST = {"n_clusters": 4, "n_init": 1}


class Receiver:
    """A webhook endpoint: keeps every JSON body POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def run_flow(api_url, database_url, tmp_path, **params) -> int:
    env = base_env(tmp_path / "prefect-home")
    process = start_flow_process(api_url, database_url, env={**env, "PREFECT_API_URL": api_url}, **params)
    process.communicate(timeout=120)
    return process.returncode


def events(api_url: str, prefix: str = "segmentation.run.", since: str | None = None) -> list[dict]:
    """The server's events with this prefix; since: only those that occurred from then on (the
    session's server holds every other test's events too)."""
    occurred = {"occurred": {"since": since}} if since else {}
    response = httpx.post(
        f"{api_url}/events/filter",
        json={"filter": {"event": {"prefix": [prefix]}, "order": "ASC", **occurred}, "limit": 50},
        auth=tuple(PREFECT_AUTH.split(":", 1)),
    )
    response.raise_for_status()
    return response.json()["events"]


def test_runs_emit_events_and_bad_runs_notify(prefect_server, receiver, conn, database_url, tmp_path, capsys):
    started = datetime.now(UTC).isoformat()
    generate_customers(conn, 2000, seed=81)
    with prefect_client_settings(prefect_server):
        CustomWebhookNotificationBlock(
            name="segmentation-alerts", url=receiver.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
        ).save("segmentation-alerts")
        assert main(["alerts", "install", "--block", "segmentation-alerts", "--stale-after", "0"]) == 0
        assert "created automation" in capsys.readouterr().out
        assert main(["alerts", "install", "--block", "custom-webhook/segmentation-alerts", "--stale-after", "0"]) == 0
        assert "updated automation" in capsys.readouterr().out
        assert main(["alerts", "install", "--block", "nosuch"]) == 1
        assert "there is no Prefect block named 'nosuch'" in capsys.readouterr().err
        automations = httpx.post(
            f"{prefect_server}/automations/filter", json={}, auth=tuple(PREFECT_AUTH.split(":", 1))
        ).json()
        assert [a["name"] for a in automations] == [AUTOMATION_NAME]

    assert run_flow(prefect_server, database_url, tmp_path, **FAST) == 0
    assert run_flow(prefect_server, database_url, tmp_path, **FAST, min_silhouette=0.99) == 3
    assert run_flow(prefect_server, database_url, tmp_path, **FAST, source_table="public.nosuch") == 3
    runs = conn.execute("SELECT run_id, status FROM segmentation.runs ORDER BY run_id").fetchall()
    assert [s for _, s in runs] == ["published", "rejected", "failed"]

    found = wait_for(
        lambda: len(e := events(prefect_server, since=started)) >= 3 and e, timeout=30, what="three run events"
    )
    by_name = {e["event"]: e for e in found}
    assert set(by_name) == {"segmentation.run.published", "segmentation.run.rejected", "segmentation.run.failed"}
    published, rejected, failed = (by_name[f"segmentation.run.{s}"] for s in ("published", "rejected", "failed"))
    assert published["resource"]["prefect.resource.id"] == f"segmentation.run.{runs[0][0]}"
    assert {
        k: published["payload"][k] for k in ("run_id", "status", "segmentation", "k", "n_customers", "n_quarantined")
    } == {
        "run_id": runs[0][0],
        "status": "published",
        "segmentation": "default",
        "k": 4,
        "n_customers": 2000,
        "n_quarantined": 0,
    }
    assert published["payload"]["source_table"] == "public.customers"
    assert rejected["resource"]["prefect.resource.id"] == f"segmentation.run.{runs[1][0]}"
    assert rejected["payload"]["churn"] == 0.0 and rejected["payload"]["n_customers"] == 2000
    assert "silhouette" in rejected["payload"]["quality_issues"][0]
    assert rejected["payload"]["error"].startswith(f"quality gate rejected run {runs[1][0]}")
    assert failed["resource"]["prefect.resource.id"] == f"segmentation.run.{runs[2][0]}"
    assert "source table public.nosuch does not exist" in failed["payload"]["error"]
    assert all(e["related"][0]["prefect.resource.role"] == "flow-run" for e in found)

    # Lineage: the published run materialized every BI view from its source table, as Prefect asset events.
    assets = wait_for(
        lambda: len(e := events(prefect_server, "prefect.asset.", started)) >= 9 and e,
        timeout=30,
        what="the asset events",
    )
    # The embedded server listens on a Unix socket, which an asset key names `local`.
    host = "local" if conn.info.host.startswith("/") else conn.info.host
    location = f"{host}:{conn.info.port}/{conn.info.dbname}"
    source = f"postgres://{location}/public.customers"
    referenced = [e for e in assets if e["event"] == "prefect.asset.referenced"]
    assert [e["resource"]["prefect.resource.id"] for e in referenced] == [source]
    materialized = {e["resource"]["prefect.resource.name"]: e for e in assets if e["event"].endswith("succeeded")}
    assert set(materialized) == {f"segmentation_bi.{v}" for v in view_names("default")}
    segments = materialized["segmentation_bi.current_segments"]
    assert segments["resource"]["prefect.resource.id"] == f"postgres://{location}/segmentation_bi.current_segments"
    assert {(r["prefect.resource.id"], r["prefect.resource.role"]) for r in segments["related"]} >= {
        (source, "asset"),
        ("segmentation", "asset-materialized-by"),
    }
    assert segments["payload"]["run_id"] == runs[0][0] and segments["payload"]["n_customers"] == 2000
    assert not [e for e in assets if e["payload"].get("run_id") in (runs[1][0], runs[2][0])]  # only a publish

    # The automation notified the webhook of the rejected and the failed run, not the published one.
    wait_for(lambda: len(receiver.received) >= 2, timeout=60, interval=0.2, what="two notifications")
    subjects = sorted(r["subject"] for r in receiver.received)
    assert subjects == [f"Segmentation run {runs[1][0]} rejected", f"Segmentation run {runs[2][0]} failed"]
    body = next(r["body"] for r in receiver.received if "failed" in r["subject"])
    assert "source table public.nosuch does not exist" in body and "The run that was current stays current" in body
    assert "(segmentation default)" in body
    assert "postgresql://" not in json.dumps(found) + json.dumps(receiver.received)


@pytest.mark.unit
def test_an_event_names_the_run_and_carries_figures_only():
    from segmentation.events import run_event

    staged = run_event("staged", {"run_id": 12, "k": 6, "n_customers": 10, "extra": "not sent"}, flow_run_id="f-1")
    assert staged["event"] == "segmentation.run.staged"
    assert staged["resource"] == {
        "prefect.resource.id": "segmentation.run.12",
        "prefect.resource.name": "segmentation run 12",
        "segmentation.name": "default",
    }
    named = run_event("published", {"run_id": 13, "segmentation": "rfm"}, flow_run_id=None)
    assert named["resource"]["segmentation.name"] == "rfm" and named["payload"]["segmentation"] == "rfm"
    assert staged["related"] == [{"prefect.resource.id": "prefect.flow-run.f-1", "prefect.resource.role": "flow-run"}]
    assert staged["payload"]["status"] == "staged" and "extra" not in staged["payload"]
    unrecorded = run_event("failed", {"run_id": None, "error": "cannot connect"}, flow_run_id="f-2")
    assert unrecorded["resource"]["prefect.resource.id"] == "segmentation.run.flow-run.f-2"
    with pytest.raises(ValueError, match="not an outcome"):
        run_event("bogus", {}, flow_run_id=None)


def test_a_segmentation_that_publishes_nothing_for_a_while_notifies(
    prefect_server, receiver, conn, database_url, tmp_path, capsys
):
    """`alerts install --stale-after` on a self-hosted server, with a window of 25 seconds: the
    segmentation that publishes nothing in it is notified, the one that publishes is not."""
    generate_customers(conn, 1000, seed=82)
    assert run_flow(prefect_server, database_url, tmp_path, **FAST, segmentation="busy") == 0
    window = 25 / 3600
    with prefect_client_settings(prefect_server):
        CustomWebhookNotificationBlock(
            name="segmentation-stale", url=receiver.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
        ).save("segmentation-stale", overwrite=True)
        assert main(["alerts", "install", "--block", "segmentation-stale", "--stale-after", str(window)]) == 0
        out = capsys.readouterr().out
        assert "automation 'segmentation: no publish of default'" in out
        assert "automation 'segmentation: no publish of busy'" in out
        assert main(["alerts", "install", "--block", "segmentation-stale", "--stale-after", "0.001"]) == 1
        assert "under 10 seconds" in capsys.readouterr().err

    # busy publishes every few seconds; default publishes nothing. Both automations' windows began
    # when they were installed, so a notification busy was wrongly sent would come with default's,
    # give or take the server's evaluation cycles: busy goes on for 10 s after default's came.
    def stale() -> list[dict]:
        return [r for r in receiver.received if r["subject"].startswith("No segmentation published")]

    started, notified = time.monotonic(), None
    while time.monotonic() - started < 90 and (notified is None or time.monotonic() - notified < 10):
        assert run_flow(prefect_server, database_url, tmp_path, **FAST, segmentation="busy") == 0
        if notified is None and stale():
            notified = time.monotonic()
    sent = stale()
    assert sent, "no notification for the segmentation that published nothing"
    assert {r["subject"] for r in sent} == {"No segmentation published for default in 0.00694444 hours"}
    assert "customer-segmentation/nightly" in sent[0]["body"]
    with prefect_client_settings(prefect_server):
        # Not every later run: the alerts go, so that the other tests' servers stay quiet.
        for name in ("segmentation: no publish of default", "segmentation: no publish of busy"):
            httpx.delete(
                f"{prefect_server}/automations/{_automation_id(prefect_server, name)}",
                auth=tuple(PREFECT_AUTH.split(":", 1)),
            ).raise_for_status()


def _automation_id(api_url: str, name: str) -> str:
    found = httpx.post(f"{api_url}/automations/filter", json={}, auth=tuple(PREFECT_AUTH.split(":", 1))).json()
    return next(a["id"] for a in found if a["name"] == name)


@pytest.mark.unit
def test_asset_keys_are_prefect_asset_keys_without_credentials():
    from prefect.assets import Asset

    from segmentation.events import asset_events, database_location

    location = database_location("postgresql://writer:s3cret@db.example.com:6432/crm?sslmode=require")
    assert location == "db.example.com:6432/crm"
    assert database_location("postgresql:///crm?host=/var/run/postgresql") == "local:5432/crm"
    found = asset_events(
        {"run_id": 7, "source_table": "crm.customer_rfm", "n_customers": 5},
        location=location,
        views=["rfm_segments"],
        flow_run_id=None,
    )
    for event in found:
        Asset(key=event["resource"]["prefect.resource.id"])  # Prefect's own check of a key
    assert [e["resource"]["prefect.resource.id"] for e in found] == [
        "postgres://db.example.com:6432/crm/crm.customer_rfm",
        "postgres://db.example.com:6432/crm/segmentation_bi.rfm_segments",
    ]
    assert "s3cret" not in str(found)
