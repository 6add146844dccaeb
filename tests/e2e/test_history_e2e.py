"""Why wasn't I paged: a real Alertmanager sends through the adapter, and `history` and `explain` (the production
install's command) tell each alert's story; two replicas on one PostgreSQL ledger share one history; the status page
is loaded in headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from .conftest import BEARER, SECRET
from .harness import Alertmanager, Listener, binary, production_bin, wait_until

RULES = """rules:
  - name: night-quiet
    matchers: ['quiet="yes"']
    action: drop
"""


def cli(adapter_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The production install's alert24-adapter, with the adapter's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT24_", "SHARED_SECRET", "LEDGER_URL"))}
    return subprocess.run(
        [production_bin("alert24-adapter"), *args],
        env={**env, **adapter_env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def kept(adapter_env: dict[str, str], alertname: str) -> list[dict]:
    """The history's notifications of an alertname (history --json), oldest first."""
    done = cli(adapter_env, "history", "--alertname", alertname, "--json", "--limit", "0")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in reversed(done.stdout.splitlines())]


def outcomes(adapter_env: dict[str, str], alertname: str) -> list[str]:
    return [a["outcome"] for e in kept(adapter_env, alertname) for a in e["alerts"]]


def test_explain_tells_why_each_alert_paged_or_did_not(procs, fake, start_adapter, tmp_path):
    """Dropped by a rule, skipped as unchanged, deferred by a 429, accepted, rejected: one Alertmanager, one
    adapter, and for each alert the outcome `history --json` holds and the story `explain` tells."""
    (tmp_path / "rules.yml").write_text(RULES)
    listener = Listener()
    am = Alertmanager(procs, f"{listener.url}/alertmanager", http_config=BEARER, group_interval="1s")
    env = {"ADAPTER_CONFIG": str(tmp_path / "rules.yml"), "STATE_DIRECTORY": str(procs.workdir / "adapter-state")}
    start_adapter(listener=listener, **env)
    settings = {
        "SHARED_SECRET": SECRET,
        "ALERT24_INTEGRATION_KEY": "e2e-integration-key",
        "ALERT24_API_URL": fake.url,
        **env,
    }

    # Accepted, then unchanged: the group grows by a second alert, and the first one's trigger is not sent again.
    am.fire("alertname=E2EPaged", "instance=a")
    wait_until(lambda: outcomes(settings, "E2EPaged") == ["accepted"], 20, "the first trigger accepted")
    am.fire("alertname=E2EPaged", "instance=b")
    wait_until(lambda: "unchanged" in outcomes(settings, "E2EPaged"), 20, "the group's second notification")
    # Dropped by a rule.
    am.fire("alertname=E2EDropped", "quiet=yes")
    wait_until(lambda: outcomes(settings, "E2EDropped") == ["dropped"], 20, "the dropped alert")
    # Rejected: Alert24 answers 400, and the adapter 422 (Alertmanager does not retry it).
    fake.fail(400)
    am.fire("alertname=E2ERejected")
    wait_until(lambda: outcomes(settings, "E2ERejected")[:1] == ["rejected"], 20, "the rejected alert")
    # Deferred: Alert24 answers 429 with a Retry-After longer than the webhook's budget.
    fake.fail(429, retry_after="3")
    am.fire("alertname=E2EDeferred")
    # The call that met the 429 failed (503); Alertmanager's retries within its Retry-After are deferred (503).
    wait_until(lambda: "deferred" in outcomes(settings, "E2EDeferred"), 20, "the deferred alert")

    stories = {}
    for name, labels in [
        ("paged", ["E2EPaged", "instance=a"]),
        ("dropped", ["E2EDropped"]),
        ("rejected", ["E2ERejected"]),
        ("deferred", ["E2EDeferred"]),
    ]:
        done = cli(settings, "explain", *labels)
        assert done.returncode == 0, done.stderr
        stories[name] = done.stdout.splitlines()
    paged = stories["paged"]
    assert "sent (trigger, new to the ledger): Alert24 accepted it (202" in paged[0]
    assert "not sent: Alert24 accepted this episode" in paged[1]
    assert "The ledger holds its incident open since" in "\n".join(paged)
    assert paged[-1].startswith("Verdict: paged at ")
    assert stories["dropped"][0].endswith("dropped by rule night-quiet: nothing was sent")
    assert stories["dropped"][-1] == "Verdict: not paged: dropped by rule night-quiet: nothing was sent."
    assert "Alert24 rejected it (400" in stories["rejected"][0]
    assert "answered 422" in stories["rejected"][0]
    assert "Alert24 answered 429" in stories["deferred"][0] and "answered 503" in stories["deferred"][0]
    waited = [line for line in stories["deferred"][:-1] if "deferred: Alert24 asked to wait until" in line]
    assert waited and all("answered 503" in line for line in waited)
    # Alertmanager retries the deferred alert once the 429's wait is over: the story goes on, and it pages.
    wait_until(lambda: "accepted" in outcomes(settings, "E2EDeferred"), 30, "the deferred alert sent at a retry")
    assert cli(settings, "explain", "E2EDeferred").stdout.splitlines()[-1].startswith("Verdict: paged at ")


def get_history(url: str) -> list[dict]:
    req = urllib.request.Request(f"{url}/history?limit=50", headers={"Authorization": f"Bearer {SECRET}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        return json.loads(r.read())["entries"]


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(  # noqa: S310
        f"{url}/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def webhook(alertname: str) -> dict:
    from ..conftest import payload

    body = payload("firing-single")
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = alertname
        alert.pop("fingerprint", None)
    return body


def test_two_replicas_on_one_postgresql_ledger_share_one_history(start_adapter, postgres_url):
    """Each replica keeps its webhooks in the shared store: GET /history on either shows both."""
    a = start_adapter("replica-a", LEDGER_URL=postgres_url)
    b = start_adapter("replica-b", LEDGER_URL=postgres_url)
    assert post(a.url, webhook("ThroughA")) == 200
    assert post(b.url, webhook("ThroughB")) == 200
    # Each process writes the entries it holds once a second.
    wait_until(lambda: len(get_history(a.url)) == 2, 10, "both replicas' entries in the shared history")
    for replica in (a, b):
        entries = get_history(replica.url)
        names = {alert["alertname"] for e in entries for alert in e["alerts"]}
        assert names == {"ThroughA", "ThroughB"}
        assert len({e["replica"] for e in entries}) == 2, "each entry names the process that kept it"


def chromium(*args: str) -> subprocess.CompletedProcess:
    exe = binary("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=60)


def test_the_status_page_shows_an_open_incident_and_a_failed_notification(start_adapter, fake, tmp_path):
    """Headless Chromium loads GET /status through gunicorn, as a person would on a phone: with the secret it shows
    the open incident and the failed notification first; without it, the answer is 401."""
    adapter = start_adapter()
    assert post(adapter.url, webhook("DiskFull")) == 200
    fake.fail(400)
    assert post(adapter.url, webhook("BrokenRule")) == 422
    wait_until(lambda: len(get_history(adapter.url)) == 2, 10, "both webhooks in the history")
    host = adapter.url.split("//")[1]
    seen = chromium("--window-size=390,844", "--dump-dom", f"http://oncall:{SECRET}@{host}/status")
    assert seen.returncode == 0, seen.stderr[-2000:]
    page = seen.stdout
    assert "Open incidents (1)" in page and "DiskFull" in page
    assert page.index("BrokenRule") < page.index("DiskFull</strong> <span"), "the failure comes first"
    assert "rejected" in page and 'answered <span class="bad">422</span>' in page
    assert SECRET not in page
    refused = chromium("--dump-dom", f"http://{host}/status")
    assert "ERR_INVALID_AUTH_CREDENTIALS" in refused.stderr and "Open incidents" not in refused.stdout
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{adapter.url}/status", timeout=10)  # noqa: S310
    assert answer.value.code == 401 and answer.value.headers["WWW-Authenticate"].startswith("Basic ")
    shot = tmp_path / "status.png"
    taken = chromium("--window-size=390,844", f"--screenshot={shot}", f"http://oncall:{SECRET}@{host}/status")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, "a screenshot of what a person sees"
    if os.environ.get("STATUS_SCREENSHOT"):
        shot.replace(os.environ["STATUS_SCREENSHOT"])


pytestmark = pytest.mark.e2e
