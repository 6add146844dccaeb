"""The Prometheus rules and the Grafana dashboard shipped in deploy/: valid, tested, and about real metrics."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from adapter.metrics import SCRAPE_TIME_FAMILIES, Metrics

from .e2e.harness import binary

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "alert24-adapter-rules.yml"
METRIC = re.compile(r"\balert24_adapter_[a-z0-9_]+")


def exported_families() -> set[str]:
    return {family.name for family in Metrics().registry.collect()} | set(SCRAPE_TIME_FAMILIES)


def family_of(name: str) -> str:
    return re.sub(r"_(total|bucket|count|sum)$", "", name)


def test_promtool_checks_the_rules():
    promtool = binary("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    """Each alert fires on the series it is meant for (deploy/prometheus/alert24-adapter-rules.test.yml)."""
    promtool = binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "alert24-adapter-rules.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_only_metrics_the_adapter_exports():
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {family_of(m) for e in exprs for m in METRIC.findall(e)}
    assert used and used <= exported_families()


def test_dashboard_queries_only_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "alert24-adapter.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {family_of(m) for e in exprs for m in METRIC.findall(e)}
    assert used == exported_families(), "every metric has a panel, and every panel a metric"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.parametrize("family", sorted(exported_families()))
def test_metric_names_follow_prometheus_conventions(family):
    metrics = {f.name: f for f in Metrics().registry.collect()}
    if family in SCRAPE_TIME_FAMILIES:
        assert family.startswith("alert24_adapter_")
        return
    kind = metrics[family].type
    assert family.startswith("alert24_adapter_")
    if kind == "histogram":
        assert family.endswith("_seconds")
    assert len(metrics[family].samples[0].labels if metrics[family].samples else {}) <= 3
