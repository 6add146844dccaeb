"""The two traffic loads of `make bench`: what Alertmanager really sends, and an Alert24 that rate-limits.

- churn(): groups of M alerts, every notification carrying the whole group and one alert changing each
  time (it resolves, or fires again), each group's notifications one after the other as Alertmanager
  sends them; counts Alert24 calls per notification and webhooks/s.
- rate_limited(): one group of M alerts against a fake that answers 429 beyond K events a minute, resent
  as Alertmanager does after a failure (here 1 s later, and a webhook unanswered after 10 s counts as
  failed); counts the calls made until every alert is accepted, and the time it takes.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from adapter.alertmanager import fingerprint

SECRET = "bench-secret"
# Alertmanager's webhook timeout, and the wait before its resend in this model.
TIMEOUT, RESEND_AFTER = 10.0, 1.0


def group_payload(group: int, statuses: list[str]) -> bytes:
    """The whole group `group`: one alert per status, on its own instance, firing or resolved."""
    alerts = []
    for i, status in enumerate(statuses):
        labels = {
            "alertname": "BenchChurn",
            "instance": f"g{group}-host-{i}:9100",
            "job": "node",
            "severity": "warning",
        }
        alerts.append(
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": f"churn alert {i} of group {group}"},
                "startsAt": "2026-11-28T13:32:21.417216604Z",
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T14:32:21Z",
                "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
                "fingerprint": fingerprint(labels),
            }
        )
    return json.dumps(
        {
            "receiver": "alert24",
            "status": "firing" if "firing" in statuses else "resolved",
            "alerts": alerts,
            "groupLabels": {"alertname": "BenchChurn", "group": str(group)},
            "commonLabels": {"alertname": "BenchChurn"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example:9093",
            "version": "4",
            "groupKey": f'{{}}:{{alertname="BenchChurn", group="{group}"}}',
            "truncatedAlerts": 0,
        }
    ).encode()


def post(port: int, body: bytes, conn: http.client.HTTPConnection | None = None):
    """POST one webhook; (status or None on a timeout or a dropped connection, the connection to reuse)."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    try:
        conn.request("POST", "/alertmanager", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, conn
    except (OSError, http.client.HTTPException):
        conn.close()
        return None, None


def churn(port: int, count_calls, groups: int, alerts: int, notifications: int) -> dict:
    """`groups` groups at once, each sending `notifications` notifications of its `alerts` alerts, one alert
    toggled between firing and resolved from one notification to the next. The first notification of each
    group (every alert new) is counted apart from the rest, which are timed."""
    statuses: list[int] = []

    def one_group(g: int, first: bool) -> list[int]:
        state = ["firing"] * alerts
        conn, codes = None, []
        for n in range(notifications):
            if n:
                i = (n - 1) % alerts
                state[i] = "resolved" if state[i] == "firing" else "firing"
            if (n == 0) == first:
                status, conn = post(port, group_payload(g, state), conn)
                codes.append(status or 0)
        if conn is not None:
            conn.close()
        return codes

    before = count_calls()
    with ThreadPoolExecutor(groups) as pool:
        for codes in pool.map(lambda g: one_group(g, True), range(groups)):
            statuses.extend(codes)
    middle = count_calls()
    started = time.monotonic()
    with ThreadPoolExecutor(groups) as pool:
        for codes in pool.map(lambda g: one_group(g, False), range(groups)):
            statuses.extend(codes)
    elapsed = time.monotonic() - started
    after = count_calls()
    changing = groups * (notifications - 1)
    return {
        "groups": groups,
        "alerts": alerts,
        "notifications": groups * notifications,
        "non2xx": sum(1 for s in statuses if not 200 <= s < 300),
        "first_calls_per_notification": (middle - before) / groups,
        "calls_per_notification": (after - middle) / changing,
        "calls_per_notification_overall": (after - before) / (groups * notifications),
        "rate": changing / elapsed,
        "seconds": elapsed,
    }


def rate_limited(port: int, fake, alerts: int, cap: float) -> dict:
    """One group of `alerts` firing alerts, resent RESEND_AFTER after every failed answer until one is 2xx and
    the fake has accepted every alert, or `cap` seconds pass."""
    body = group_payload(0, ["firing"] * alerts)
    started = time.monotonic()
    webhooks, answers = 0, []
    done_at = None
    while time.monotonic() - started < cap:
        status, conn = post(port, body)
        if conn is not None:
            conn.close()
        webhooks += 1
        answers.append(status)
        if status is not None and 200 <= status < 300 and len(_accepted_alerts(fake)) >= alerts:
            done_at = time.monotonic() - started
            break
        time.sleep(RESEND_AFTER)
    with fake.lock:
        codes = [r["status"] for r in fake.requests]
    return {
        "alerts": alerts,
        "done": done_at is not None,
        "seconds": done_at if done_at is not None else time.monotonic() - started,
        "calls": len(codes),
        "calls_429": sum(1 for c in codes if c == 429),
        "accepted_alerts": len(_accepted_alerts(fake)),
        "webhooks": webhooks,
        "webhooks_unanswered": sum(1 for s in answers if s is None),
    }


def _accepted_alerts(fake) -> set[str]:
    """The alerts (by instance) the fake accepted a trigger for, whatever the adapter's event looks like."""
    out = set()
    for body in fake.accepted():
        details = (body.get("payload") or {}).get("custom_details") or {}
        labels = details.get("labels", details)
        if body.get("event_action") == "trigger" and "instance" in labels:
            out.add(labels["instance"])
    return out


def run_together(jobs: dict) -> dict:
    """Run each named job (a callable) in its own thread, at once; their results by name."""
    results: dict = {}

    def run(name, job):
        results[name] = job()

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
