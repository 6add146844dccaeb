"""A real Alertmanager drives the adapter under gunicorn; only Alert24 is a local fake."""

import time
from datetime import datetime

from .conftest import BEARER, INTEGRATION_KEY
from .harness import Alertmanager, post_alerts, wait_until

DISK_1 = ("alertname=DiskFull", "severity=warning", "instance=db-1:9100", "job=node")
DISK_2 = ("alertname=DiskFull", "severity=warning", "instance=db-2:9100", "job=node")
# Another alert of the same group: its trigger proves Alertmanager flushed the group again.
MARKER = ("alertname=DiskFull", "severity=warning", "instance=marker:9100", "job=node")


def accepted(fake, action=None):
    return [b for b in fake.accepted() if action is None or b["event_action"] == action]


def instance(body) -> str:
    return body["payload"]["custom_details"]["labels"]["instance"]


def flush_again(am, adapter) -> None:
    """Make Alertmanager flush the group once more and wait until the adapter answered that flush with a 200:
    whatever the group still held (a resend, a duplicate) has reached the adapter by then. Called once the
    adapter has answered the previous flush, so that its answer is not taken for this one."""
    before = len(adapter.webhooks())
    am.fire(*MARKER)
    adapter.wait_webhook(
        lambda w: w["status"] == 200 and w.get("trigger", 0) >= 1, 20, "the flush that carries the marker", before
    )


def test_fire_then_resolve(procs, fake, start_adapter):
    """Fire: exactly one trigger with the mapped fields; resolve: a resolve with the same dedup_key."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    am.fire(
        "alertname=HighErrorRate",
        "severity=critical",
        "service=payments",
        "instance=pay-1:9100",
        annotations={"summary": "Error rate above 5%", "runbook_url": "https://wiki.example/runbook"},
    )
    [trigger] = wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    assert trigger["integration_key"] == INTEGRATION_KEY
    assert trigger["payload"]["summary"] == "Error rate above 5%"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "payments"
    assert {"href": "https://wiki.example/runbook", "text": "Runbook"} in trigger["links"]
    assert any(link["text"] == "Silence" for link in trigger["links"])

    am.resolve("alertname=HighErrorRate", "severity=critical", "service=payments", "instance=pay-1:9100")
    [resolve] = wait_until(lambda: accepted(fake, "resolve"), 20, "the resolve")
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert len(accepted(fake, "trigger")) == 1
    assert fake.requests[0]["headers"]["Authorization"] == "Bearer e2e-api-key"


def test_two_instances_are_two_incidents(procs, fake, start_adapter):
    """Two alerts of one alertname in one group: two incidents; resolving one resolves only that one."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    am.fire(*DISK_1)
    am.fire(*DISK_2)

    def both():
        keys = {instance(t): t["dedup_key"] for t in accepted(fake, "trigger")}
        return len(keys) == 2 and keys

    keys = wait_until(both, 20, "a trigger for each instance")
    assert len(set(keys.values())) == 2

    am.resolve(*DISK_1)
    [resolve] = wait_until(lambda: accepted(fake, "resolve"), 20, "the resolve of db-1")
    assert resolve["dedup_key"] == keys["db-1:9100"]
    adapter.wait_webhook(lambda w: w["status"] == 200 and w.get("resolve"), 20, "the 200 for the resolve")
    flush_again(am, adapter)  # db-2, still firing, is in that flush too: nothing may resolve it
    assert [r["dedup_key"] for r in accepted(fake, "resolve")] == [keys["db-1:9100"]]


def test_alert24_outage_loses_nothing(procs, fake, start_adapter):
    """Alert24 answers 503 for a while, during the trigger and again during the resolve: both arrive once."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    outages = []

    def outage(seconds):
        fake.fail_for(seconds)
        outages.append((time.time(), time.time() + seconds))

    outage(5)
    am.fire(*DISK_1)
    [trigger] = wait_until(lambda: accepted(fake, "trigger"), 40, "the trigger after the outage")
    # The adapter's answer to that delivery, before the next outage begins.
    adapter.wait_webhook(lambda w: w["status"] == 200, 20, "the 200 for the trigger")
    outage(5)
    am.resolve(*DISK_1)
    [resolve] = wait_until(lambda: accepted(fake, "resolve"), 40, "the resolve after the outage")
    assert resolve["dedup_key"] == trigger["dedup_key"]
    adapter.wait_webhook(lambda w: w["status"] == 200 and w.get("resolve"), 20, "the 200 for the resolve")
    flush_again(am, adapter)
    ours = [b for b in accepted(fake) if b["dedup_key"] == trigger["dedup_key"]]
    assert len(ours) == 2, "each event accepted exactly once"

    answers = adapter.webhooks()
    assert [w["status"] for w in answers].count(503) >= 2, "the adapter told Alertmanager about both outages"
    for w in answers:
        # A 200 that sent nothing (Alert24 has it: a resend) is right at any time.
        if w["status"] == 200 and w.get("accepted"):
            at = datetime.fromisoformat(w["ts"].replace("Z", "+00:00")).timestamp()
            assert not any(start <= at < end - 0.2 for start, end in outages), f"2xx during an outage: {w}"


def test_ha_pair_sends_one_incident(procs, fake, start_adapter):
    """Both members of an HA pair send (as they do when gossip is late, alertmanager #3865): identical dedup_keys,
    so one incident."""
    # Every copy is sent, so that both arrive at the fake (the ledger would absorb the second: test_traffic_e2e).
    adapter = start_adapter(RESEND_INTERVAL="0")
    # Two members that do not gossip: in a cluster, the second may rightly hear in time that the first sent.
    am1 = Alertmanager(procs, f"{adapter.url}/alertmanager", "am1", BEARER)
    am2 = Alertmanager(procs, f"{adapter.url}/alertmanager", "am2", BEARER)
    for am in (am1, am2):
        am.fire(*DISK_1)

    def from_both():
        senders = {b["links"][-1]["href"].split("/#")[0] for b in accepted(fake, "trigger")}
        return len(senders) == 2 and senders

    wait_until(from_both, 30, "a trigger from each Alertmanager")
    assert len({b["dedup_key"] for b in accepted(fake, "trigger")}) == 1


def test_rate_limit_and_dropped_connection(procs, fake, start_adapter):
    """429 with Retry-After, then a connection dropped mid-request: delivered, nothing lost."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.fail(429, times=1, retry_after="1")
    fake.drop(1)
    am.fire(*DISK_1)
    [trigger] = wait_until(lambda: accepted(fake, "trigger"), 20, "the trigger")
    assert [r["status"] for r in fake.requests[:3]] == [429, None, 202]
    assert trigger["dedup_key"]


def test_300_alert_group_against_slow_alert24(procs, fake, start_adapter):
    """300 alerts in one group, 100 ms per Alert24 call: delivered within Alertmanager's timeout."""
    adapter = start_adapter(WEBHOOK_TIME_BUDGET="7", ALERT24_RETRIES="4")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.latency = 0.1
    post_alerts(am.url, [{"labels": {"alertname": "Storm", "instance": f"host-{i}:9100"}} for i in range(300)])
    answer = adapter.wait_webhook(lambda w: w.get("alerts") == 300, 30, "the 300-alert webhook")
    assert answer["status"] == 200 and answer["accepted"] == 300
    assert answer["duration_ms"] < 10_000, "inside Alertmanager's timeout"
    assert len({b["dedup_key"] for b in accepted(fake)}) == 300


def test_permanent_rejection_is_not_delivered_and_resent(procs, fake, start_adapter):
    """Alert24 rejects with 400: the adapter answers 4xx, and Alertmanager resends at the next group_interval."""
    adapter = start_adapter()
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER)
    fake.fail(400, times=1)
    am.fire(*DISK_1)
    [trigger] = wait_until(lambda: accepted(fake, "trigger"), 30, "the trigger after the rejection")
    assert fake.requests[0]["status"] == 400
    adapter.wait_webhook(lambda w: w["status"] == 200, 20, "the 200 for the resend")
    statuses = [w["status"] for w in adapter.webhooks()]
    assert statuses[0] == 422 and 200 in statuses
    assert trigger["dedup_key"] == fake.requests[0]["body"]["dedup_key"]
