"""Prometheus metrics for the adapter, correct under gunicorn's several worker processes."""

from __future__ import annotations

import glob
import logging
import os
import platform
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .version import __version__

log = logging.getLogger("alert24_adapter")

PREFIX = "alert24_adapter"
# Families computed at scrape time (from the ledger), in no registry.
SCRAPE_TIME_FAMILIES = (f"{PREFIX}_open_incidents", f"{PREFIX}_alert24_wait_seconds")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    """The directory prometheus_client shares between worker processes, when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric the adapter exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter(
            f"{PREFIX}_webhooks_total",
            "Webhooks received, by outcome and HTTP status code.",
            ["outcome", "code"],
            registry=r,
        )
        self.alerts = Counter(f"{PREFIX}_alerts_received_total", "Alerts received, by status.", ["status"], registry=r)
        self.events = Counter(
            f"{PREFIX}_events_total",
            "Alert24 events, by action, result (accepted, rejected, failed, dry_run, dropped; unchanged: not sent "
            "again, Alert24 has it; deferred: not sent now, see deferred_events_total) and dedup mode.",
            ["action", "result", "dedup_by"],
            registry=r,
        )
        self.grouped = Counter(
            f"{PREFIX}_grouped_alerts_total", "Alerts folded into one event per group (DEDUP_BY=group).", registry=r
        )
        self.truncated = Counter(
            f"{PREFIX}_truncated_alerts_total",
            "Alerts Alertmanager left out of a notification (max_alerts); their resolves never arrive.",
            registry=r,
        )
        self.dropped = Counter(
            f"{PREFIX}_dropped_alerts_total",
            "Alerts deliberately not forwarded by a drop rule, by rule.",
            ["rule"],
            registry=r,
        )
        self.oversized = Counter(
            f"{PREFIX}_oversized_webhooks_total",
            "Webhooks refused (413) with a body over MAX_BODY_BYTES, by route: their group never pages, and "
            "Alertmanager sends it again at every group_interval.",
            ["route"],
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_alert24_request_duration_seconds",
            "Time to deliver one event to Alert24, retries included, by result.",
            ["result"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.webhook_seconds = Histogram(
            f"{PREFIX}_webhook_duration_seconds", "Time to answer one webhook.", buckets=DURATION_BUCKETS, registry=r
        )
        self.retries = Counter(f"{PREFIX}_alert24_retries_total", "Requests to Alert24 that were retried.", registry=r)
        self.last_success = Gauge(
            f"{PREFIX}_last_successful_delivery_timestamp_seconds",
            "Unix time of the last webhook whose every event Alert24 accepted.",
            multiprocess_mode="max",
            registry=r,
        )
        self.reload_ok = Gauge(
            f"{PREFIX}_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or failed and kept the previous one (0).",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.reload_time = Gauge(
            f"{PREFIX}_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            multiprocess_mode="max",
            registry=r,
        )
        self.build = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels carry the adapter's and Python's versions.",
            ["version", "python"],
            multiprocess_mode="max",
            registry=r,
        )
        self.build.labels(__version__, platform.python_version()).set(1)
        self.ledger_errors = Counter(
            f"{PREFIX}_ledger_errors_total",
            "Failures to use the ledger of open incidents, by operation (record, lookup, reconcile, expire, lock, "
            "count, setup, history); paging goes on without it.",
            ["operation"],
            registry=r,
        )
        self.history_rows = Counter(
            f"{PREFIX}_history_rows_total",
            "Rows of the delivery history, by what became of them (written, pruned, failed); a failed write never "
            "changes a webhook's answer.",
            ["outcome"],
            registry=r,
        )
        self.ledger_expired = Counter(
            f"{PREFIX}_ledger_expired_total",
            "Open incidents forgotten without a resolve after LEDGER_MAX_AGE.",
            registry=r,
        )
        self.reconcile_passes = Counter(
            f"{PREFIX}_reconcile_passes_total",
            "Reconcile passes, by outcome (resolved, nothing_to_do, skipped, failed).",
            ["outcome"],
            registry=r,
        )
        self.reconciled = Counter(
            f"{PREFIX}_reconciled_resolves_total",
            "Resolves the reconciler sent for incidents Alertmanager never resolved, by result.",
            ["result"],
            registry=r,
        )
        self.reconcile_last_success = Gauge(
            f"{PREFIX}_reconcile_last_success_timestamp_seconds",
            "Unix time of the last reconcile pass that could ask every Alertmanager and deliver what it resolved.",
            multiprocess_mode="max",
            registry=r,
        )
        self.heartbeats = Counter(
            f"{PREFIX}_heartbeats_total",
            "Webhooks with heartbeat (Watchdog) alerts, by outcome (sent, collapsed into a recent ping, failed, "
            "dry_run, resolved: the Watchdog stopped).",
            ["outcome"],
            registry=r,
        )
        self.last_heartbeat = Gauge(
            f"{PREFIX}_last_successful_heartbeat_timestamp_seconds",
            "Unix time of the last heartbeat ping the heartbeat URL accepted.",
            multiprocess_mode="max",
            registry=r,
        )
        self.deferred = Counter(
            f"{PREFIX}_deferred_events_total",
            "Events not sent for now, by reason (backpressure: Alert24 answered 429 or kept failing; budget: "
            "ALERT24_RATE_LIMIT spent); the webhook is answered 503 and Alertmanager sends them again.",
            ["reason"],
            registry=r,
        )
        self.paused_until = Gauge(
            f"{PREFIX}_alert24_paused_until_timestamp_seconds",
            "Unix time before which the adapter does not call Alert24 for a route's integration key, by reason "
            "(backpressure, budget); alert24_wait_seconds is the time left.",
            ["route", "reason"],
            multiprocess_mode="max",
            registry=r,
        )
        self.open_incidents = None
        # Multiprocess files already reported unreadable, so that each is warned about once per process.
        self.unreadable: set[str] = set()

    def count_open_incidents(self, counts) -> None:
        """Export the ledger's open incidents by route, read from the ledger at every scrape by `counts()`."""
        self.open_incidents = counts

    def config_loaded(self, ok: bool) -> None:
        """Record a (re)load of the configuration: whether it succeeded, and when it last did."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set_to_current_time()

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape returns: summed over every worker in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            registry.register(_Workers(multiprocess_dir(), self.unreadable))
        else:
            registry = self.registry
        data = generate_latest(registry)
        if self.open_incidents is not None:
            data += generate_latest(_OpenIncidents(self))
        data += generate_latest(_Wait(registry))
        return data, CONTENT_TYPE_LATEST


def process_metrics() -> Metrics:
    """Metrics for a command run beside the service (`alert24-adapter reconcile` under `kubectl exec`): kept
    in this process's own registry, never written into the service's PROMETHEUS_MULTIPROC_DIR, whose files
    every scrape of the service adds up."""
    # prometheus_client picks file-backed values at import when that variable is set; this process
    # shares no files with anyone, so it counts in memory.
    if getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MutexValue
    return Metrics()


class _Workers:
    """Every worker's multiprocess files summed, leaving out those that cannot be read.

    prometheus_client creates a worker's file before it sizes it (client_python#1199): a scrape in that
    moment, or after a worker was killed in it, finds an empty file, and its merge fails for every worker.
    An empty file holds nothing yet and is passed over; any other file the merge cannot read is left out
    with one warning, so that one damaged file costs its own samples, never the whole scrape.
    """

    def __init__(self, path: str, unreadable: set[str]):
        self.path = path
        self.unreadable = unreadable

    def collect(self):
        files = [f for f in sorted(glob.glob(os.path.join(self.path, "*.db"))) if _size(f) > 0]
        try:
            return multiprocess.MultiProcessCollector.merge(files, accumulate=True)
        except Exception:  # noqa: BLE001 - any failure of one file is looked for file by file below
            return multiprocess.MultiProcessCollector.merge([f for f in files if self._readable(f)], accumulate=True)

    def _readable(self, path: str) -> bool:
        try:
            multiprocess.MultiProcessCollector.merge([path], accumulate=True)
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises, it is left out
            if path not in self.unreadable:
                self.unreadable.add(path)
                log.warning(
                    "a metrics file cannot be read and is left out of /metrics",
                    extra={"file": os.path.basename(path), "reason": f"{type(exc).__name__}: {exc}"},
                )
            return False
        return True


def _size(path: str) -> int:
    """A file's size; 0 for one that is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _Wait:
    """Seconds until Alert24 may be called again, by route: from the paused-until gauges at scrape time, so that
    the value counts down between the moments a worker sets it."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        family = GaugeMetricFamily(
            SCRAPE_TIME_FAMILIES[1],
            "Seconds until the adapter calls Alert24 again for a route's integration key (0: it does now).",
            labels=["route"],
        )
        now = time.time()
        wait: dict[str, float] = {}
        for metric in self.registry.collect():
            if metric.name != f"{PREFIX}_alert24_paused_until_timestamp_seconds":
                continue
            for sample in metric.samples:
                route = sample.labels.get("route", "")
                wait[route] = max(wait.get(route, 0.0), sample.value - now, 0.0)
        for route, seconds in sorted(wait.items()):
            family.add_metric([route], seconds)
        yield family


class _OpenIncidents:
    """A collector that asks the ledger at scrape time, so every worker's scrape sees the same number."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        family = GaugeMetricFamily(
            SCRAPE_TIME_FAMILIES[0],
            "Incidents the adapter triggered and has not resolved, by route.",
            labels=["route"],
        )
        try:
            counts = self.metrics.open_incidents()
        except Exception:
            self.metrics.ledger_errors.labels("count").inc()
            return
        for route, n in sorted(counts.items()):
            family.add_metric([route or "default"], n)
        yield family
