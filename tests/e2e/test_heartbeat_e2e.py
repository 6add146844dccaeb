"""A real Alertmanager's always-firing Watchdog becomes heartbeat pings at the fake Alert24, never an incident."""

import time
from itertools import pairwise

from .conftest import BEARER
from .harness import Alertmanager, wait_until

TOKEN = "e2e-heartbeat-token-7f3a"
WATCHDOG = ("alertname=Watchdog", "severity=none")
# The Watchdog route of docs/alertmanager.md, with its intervals shortened from a minute to a second.
FAST = {"group_wait": "0s", "group_interval": "1s", "repeat_interval": "1s"}
IN_FLIGHT = 2.5  # a webhook Alertmanager sent just before it stopped may still ping (the ping's timeout is 2 s)


def start(procs, fake, start_adapter):
    adapter = start_adapter(HEARTBEAT_URL=fake.heartbeat_url(TOKEN), HEARTBEAT_MIN_INTERVAL="1")
    am = Alertmanager(procs, f"{adapter.url}/alertmanager", http_config=BEARER, route=FAST)
    return adapter, am


def test_watchdog_pings_and_never_pages_and_a_stopped_alertmanager_leaves_a_gap(procs, fake, start_adapter):
    """Pings arrive steadily and no incident is created; Alertmanager stops: the pings stop, until it is back."""
    adapter, am = start(procs, fake, start_adapter)
    am.fire(*WATCHDOG)
    wait_until(lambda: len(fake.answered_pings()) >= 4, 30, "four heartbeat pings")
    times = [p["at"] for p in fake.answered_pings()]
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) < 4, f"while the Watchdog fires, pings arrive every second or two: {gaps}"
    assert {p["token"] for p in fake.pings} == {TOKEN}

    am.stop()
    stopped = time.monotonic()
    time.sleep(IN_FLIGHT + 5)
    assert [p for p in fake.pings if p["at"] > stopped + IN_FLIGHT] == [], "no ping while Alertmanager is down"

    am.start()
    am.fire(*WATCHDOG)  # Alertmanager keeps no alerts across a restart; Prometheus would send it again
    wait_until(lambda: [p for p in fake.answered_pings() if p["at"] > stopped], 30, "pings after the restart")
    times = [p["at"] for p in fake.answered_pings()]
    gap_start, gap_end = max(pairwise(times), key=lambda pair: pair[1] - pair[0])
    assert gap_start <= stopped + IN_FLIGHT < gap_end and gap_end - gap_start >= 5, "the gap a monitor alerts on"

    assert fake.requests == [], "the Watchdog never became an incident event"
    answers = adapter.webhooks()
    assert answers and {w["status"] for w in answers} == {200}
    assert {w["heartbeat"] for w in answers} <= {"sent", "collapsed"} and {w["events"] for w in answers} == {0}
    assert TOKEN not in adapter.process.output()


def test_a_failing_heartbeat_url_answers_503_and_alertmanager_retries(procs, fake, start_adapter):
    """While the heartbeat URL fails the adapter answers 503; Alertmanager retries, and the ping arrives after."""
    adapter, am = start(procs, fake, start_adapter)
    fake.fail_heartbeats_for(4)
    am.fire(*WATCHDOG)
    wait_until(fake.answered_pings, 40, "a heartbeat ping after the failure ends")
    delivered = adapter.wait_webhook(lambda w: w["status"] == 200, 20, "the delivered webhook")
    assert delivered["heartbeat"] == "sent" and delivered["events"] == 0

    answers = adapter.webhooks()
    refused = answers[: answers.index(delivered)]
    assert refused and {(w["status"], w["outcome"]) for w in refused} == {(503, "failed")}
    assert all("heartbeat ping failed" in w["error"] for w in refused)
    failed = [p for p in fake.pings if p["status"] == 503]
    assert len(failed) == len(refused) >= 2, "every failed ping was a 503, and Alertmanager retried"
    assert fake.requests == [], "the Watchdog never became an incident event"
    assert TOKEN not in adapter.process.output()
