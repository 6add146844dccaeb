"""What the ledger's tests share: events as the ledger keeps them, and the keys it holds open. The fixtures
`store_url` and `ledger` (both stores) are in conftest.py."""

from adapter.mapping import Event


def event(key, action="trigger", members=None, alertname="DiskFull", summary="disk full", severity="warning"):
    members = members if members is not None else ((key, "firing" if action == "trigger" else "resolved"),)
    payload = {"summary": summary, "severity": severity, "source": "x", "custom_details": {}}
    return Event(key, action, payload, [], {}, members, alertname)


def keys(ledger):
    return [(e.route, e.dedup_key) for e in ledger.entries()]
