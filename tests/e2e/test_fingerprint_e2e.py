"""Our fingerprints against the ones a real Alertmanager computes, for generated label sets."""

import json
import urllib.request
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.alertmanager import fingerprint

from .harness import Alertmanager, Processes, post_alerts

names = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,20}\Z")
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
label_sets = st.dictionaries(names, values, min_size=1, max_size=30)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    procs = Processes(tmp_path_factory.mktemp("fingerprints"))
    try:
        yield Alertmanager(procs, "http://127.0.0.1:9/unused")
    finally:
        procs.stop_all()


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(label_sets, min_size=1, max_size=25))
def test_fingerprints_match_real_alertmanager(alertmanager, batch):
    """Unicode, empty values, many labels: Alertmanager's fingerprint and ours agree on every set."""
    run = uuid.uuid4().hex[:8]
    tagged = [{**labels, "alertname": f"fp-{run}-{i}"} for i, labels in enumerate(batch)]
    post_alerts(alertmanager.url, [{"labels": labels} for labels in tagged])
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=10) as r:  # noqa: S310
        stored = json.load(r)
    by_name = {a["labels"]["alertname"]: a for a in stored}
    for labels in tagged:
        alert = by_name[labels["alertname"]]
        assert fingerprint(labels) == alert["fingerprint"], labels
        assert fingerprint(alert["labels"]) == alert["fingerprint"]
