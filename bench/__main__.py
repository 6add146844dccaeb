"""Run the benchmark: `python -m bench [--rounds N] [--seconds S] [--soak S] [--only churn,rate-limit]`.

Starts everything on 127.0.0.1 — an instant fake Alert24 (nginx), slow ones (50 ms per call), the adapter
under gunicorn with the shipped gunicorn.conf.py, the bare Flask ceiling and a sequential forwarder under
the same settings, and the article's Node adapter (express + axios, installed from npm into bench/.cache)
as a peer — loads them with wrk and an open-loop generator, checks that every answer was 2xx and every
event arrived, and prints the table and the ratios for the targets in docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from adapter import mapping
from adapter.alertmanager import fingerprint
from adapter.config import LEDGER_FILE, Config
from bench import ledger_cost, openloop, traffic, transports
from tests.e2e.harness import Processes, binary, free_port, http_ok, wait_until
from tests.fake_alert24 import FakeAlert24

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")
NODE_DIR = ROOT / "bench" / "node"
NODE_CACHE = ROOT / "bench" / ".cache" / "node"
LOADS = ("wire", "churn", "rate-limit", "ledger-sweep")
# The article's adapter lets a failed axios call reject its handler's promise; Node would exit on it. Kept running,
# the webhook stays unanswered and Alertmanager times out, as with a hung bridge.
NODE_ENV = {"NODE_OPTIONS": "--unhandled-rejections=warn", "ALERT24_API_KEY": "bench-api-key", "SHARED_SECRET": SECRET}
# The loads at default settings: (name, alerts in each webhook, how many of them are new in each).
WIRE = (("new-1", 1, 1), ("new-10", 10, 10), ("resend-10", 10, 1))
# Each wire load's goal: the adapter's webhooks/s as a multiple of the Node adapter's.
WIRE_GOALS = {"new-1": 1.0, "new-10": 1.3, "resend-10": 3.0}


def payload(alerts: int, tag: str = "bench", new: int = 0, known: int = 0) -> bytes:
    """A webhook with `alerts` distinct firing alerts, shaped like Alertmanager's. The last `new` of them are new
    in each request: their instance and fingerprint hold @SEQ@, which bench/post.lua fills in per request; the first
    `known` have the fingerprint @KNOWN@, which it fills with keys pre-filled in a ledger."""
    items = []
    for i in range(alerts):
        host = f"host-@SEQ@-{i}" if i >= alerts - new else f"host-{i}"
        labels = {"alertname": "BenchAlert", "instance": f"{host}:9100", "job": "node", "severity": "warning"}
        fp = f"@SEQ@{i:04x}" if i >= alerts - new else fingerprint({**labels, "tag": tag})
        fp = "@KNOWN@" if i < known else fp
        items.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"Bench alert {i} on host-{i}", "runbook_url": "https://wiki.example/rb"},
                "startsAt": "2026-11-28T13:32:21.417216604Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
                "fingerprint": fp,
            }
        )
    return json.dumps(
        {
            "receiver": "alert24",
            "status": "firing",
            "alerts": items,
            "groupLabels": {"alertname": "BenchAlert"},
            "commonLabels": {"alertname": "BenchAlert", "job": "node", "severity": "warning"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager.example:9093",
            "version": "4",
            "groupKey": '{}:{alertname="BenchAlert"}',
            "truncatedAlerts": 0,
        }
    ).encode()


def defaults(api_url: str, state: Path) -> dict[str, str]:
    """An adapter's environment at its default settings against a fake Alert24, with a state directory of its own."""
    return {"ALERT24_INTEGRATION_KEY": "bench-key", "ALERT24_API_URL": api_url, "STATE_DIRECTORY": str(state)}


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, peak RSS and PSS (shared pages counted once) summed over the process tree, in MB."""
    rss = hwm = pss = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
    return {"rss": rss / 1024, "peak_rss": hwm / 1024, "pss": pss / 1024}


class Gunicorn:
    """An app under gunicorn with the shipped gunicorn.conf.py."""

    def __init__(self, procs: Processes, name: str, app: str, env: dict[str, str]):
        self.is_adapter = app == "wsgi:app"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "SHARED_SECRET": SECRET, **env}
        full.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = procs.start(
            name, [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", app], env=full, cwd=ROOT
        )
        wait_until(lambda: http_ok(f"{self.url}/healthz") or not self.process.alive(), 30, f"{name} to answer")
        if not self.process.alive():
            raise SystemExit(f"{name} did not start:\n{self.process.output()}")

    @property
    def pid(self) -> int:
        return self.process.pid


def node_modules() -> Path:
    """express and axios for the Node peers, installed from npm into the benchmark's own cache."""
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    manifest = (NODE_DIR / "package.json").read_text()
    stamp = NODE_CACHE / ".installed"
    if not stamp.exists() or stamp.read_text() != manifest:
        (NODE_CACHE / "package.json").write_text(manifest)
        npm = binary("npm")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_CACHE, check=True, timeout=300
        )
        stamp.write_text(manifest)
    return NODE_CACHE / "node_modules"


class Node:
    """A Node.js program of bench/node/ on 127.0.0.1, with the cached modules on its path."""

    def __init__(self, procs: Processes, name: str, script: str, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**os.environ, "PORT": str(self.port), "NODE_PATH": str(node_modules()), **env}
        self.process = procs.start(name, [binary("node"), str(NODE_DIR / script)], env=full)
        wait_until(lambda: http_ok(f"{self.url}/healthz") or not self.process.alive(), 30, f"{name} to answer")
        if not self.process.alive():
            raise SystemExit(f"{name} did not start:\n{self.process.output()}")
        self.is_adapter = False

    @property
    def pid(self) -> int:
        return self.process.pid


class SlowAlert24(Node):
    """Alert24 answering after 50 ms (bench/node/slow-alert24.js), with counts of what it accepted."""

    def __init__(self, procs: Processes, name: str = "slow-alert24", latency_ms: int = 50):
        super().__init__(procs, name, "slow-alert24.js", {"LATENCY_MS": str(latency_ms)})
        self.api_url = f"{self.url}/api/v1/incidents"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as r:  # noqa: S310
            return json.loads(r.read())

    def count(self) -> int:
        return self.stats()["accepted"]


def idle_share() -> tuple[float, float]:
    """The machine's idle and total CPU time so far (from /proc/stat), for the share idle over a run."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


class InstantAlert24:
    """nginx answering every POST with 202 at once, one access-log line per request."""

    def __init__(self, procs: Processes, name: str = "fake-nginx"):
        exe = binary("nginx")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1/incidents"
        work = procs.workdir / name
        work.mkdir()
        self.log = work / "access.log"
        temp = "\n".join(f"  {k}_temp_path {work / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (work / "nginx.conf").write_text(
            f"""{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "error.log"};
events {{ worker_connections 4096; }}
http {{
{temp}
  log_format fake '$request_time';
  access_log {self.log} fake buffer=64k flush=500ms;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location / {{ default_type application/json; return 202 '{{"status":"success"}}'; }}
  }}
}}
"""
        )
        self.process = procs.start(name, [exe, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"])
        wait_until(lambda: self.log.exists() or not self.process.alive(), 10, "the fake Alert24")

    def count(self) -> int:
        time.sleep(0.8)  # the access log is flushed every 500 ms
        return sum(1 for _ in self.log.open())

    def times(self, skip: int) -> list[float]:
        time.sleep(0.8)
        with self.log.open() as fh:
            return [float(line) for i, line in enumerate(fh) if i >= skip]

    @property
    def pid(self) -> int:
        return self.process.pid


SEEDS = itertools.count(1)


def wrk(url: str, body: Path, seconds: float, connections: int, env: dict[str, str] | None = None) -> dict[str, int]:
    """One wrk run; a template body (payload(new=...)) gets numbers no other run of this benchmark uses."""
    exe = binary("wrk")
    out = subprocess.run(
        [
            exe,
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(ROOT / "bench" / "post.lua"),
            url,
        ],
        env={
            **os.environ,
            "BENCH_BODY": str(body),
            "BENCH_SECRET": SECRET,
            "BENCH_SEED": str(next(SEEDS) * 10**9),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    return {k: int(v) for k, v in (part.split("=") for part in line.split()[1:])}


def settled(fake: SlowAlert24) -> int:
    """The fake's count once webhooks still in flight (wrk stops waiting, the server does not) are done."""
    counts = [fake.count()]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        counts.append(fake.count())
        if counts[-1] == counts[-2]:
            break
    return counts[-1]


def storm(server, fake: SlowAlert24, body: Path, seconds: float, conns: int) -> dict:
    """Many more concurrent 1-alert webhooks than a thread pool has, against a slow Alert24."""
    accepted_before = settled(fake)
    delivered_before = delivered(server) if server.is_adapter else 0
    idle_before, total_before = idle_share()
    cpu_before = cpu_seconds(server.pid)
    started = time.monotonic()
    result = wrk(f"{server.url}/alertmanager", body, seconds, conns)
    elapsed = time.monotonic() - started
    idle_after, total_after = idle_share()
    cpu = cpu_seconds(server.pid) - cpu_before
    accepted_after = settled(fake)
    return {
        "webhooks": result["requests"],
        "delivered": delivered(server) - delivered_before if server.is_adapter else 0,
        "events": accepted_after - accepted_before,
        "errors": result["errors"],
        "non2xx": result["non2xx_total"],
        "rate": result["requests"] / elapsed,
        "p99_ms": result["p99_us"] / 1000,
        "cpu_ms_per_webhook": 1000 * cpu / max(result["requests"], 1),
        "cpu_share": cpu / elapsed,
        "idle_share": (idle_after - idle_before) / max(total_after - total_before, 1),
        "alerts": 1,
    }


def delivered(server: Gunicorn) -> int:
    """Webhooks the adapter answered 200 after delivering every event, from its own /metrics (0 for others)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as r:  # noqa: S310
        if r.status != 200:
            return 0
        for line in r.read().decode().splitlines():
            if line.startswith('alert24_adapter_webhooks_total{code="200",outcome="delivered"}'):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def saturate(
    server: Gunicorn, fake: InstantAlert24, body: Path, alerts: int, seconds: float, conns: int, env=None
) -> dict:
    """Load a server flat out with wrk (`env`: for bench/post.lua); CPU per webhook, rate and validity."""
    delivered_before = delivered(server) if server.is_adapter else 0
    fake_before, cpu_before, fake_cpu_before = fake.count(), cpu_seconds(server.pid), cpu_seconds(fake.pid)
    started = time.monotonic()
    result = wrk(f"{server.url}/alertmanager", body, seconds, conns, env)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(server.pid) - cpu_before
    fake_cpu = cpu_seconds(fake.pid) - fake_cpu_before
    events = fake.count() - fake_before
    return {
        "webhooks": result["requests"],
        # wrk counts only the answers it read before stopping; the server also finished those in flight.
        "delivered": delivered(server) - delivered_before if server.is_adapter else 0,
        "errors": result["errors"],
        "non2xx": result["non2xx_total"],
        "events": events,
        "rate": result["requests"] / elapsed,
        "cpu_ms_per_webhook": 1000 * cpu / max(result["requests"], 1),
        "cpu_share": cpu / elapsed,
        "fake_cpu_share": fake_cpu / elapsed,
        "alerts": alerts,
    }


def post_once(url: str, body: bytes, timeout: float = 60) -> tuple[int, float]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.perf_counter()
    conn.request(
        "POST",
        "/alertmanager",
        body=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def show(path: str) -> int:
    """Print the report of an earlier run from its JSON file."""
    results = json.loads(Path(path).read_text())
    if "saturation" in results:
        report(results)
    report_wire(results)
    report_traffic(results)
    report_sweep(results)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per saturation case (default 3)")
    parser.add_argument("--seconds", type=float, default=8, help="seconds per saturation run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--storm-connections", type=int, default=256, help="wrk connections in the storm")
    parser.add_argument("--rate", type=float, default=200, help="webhooks/s for the latency and soak runs")
    parser.add_argument("--soak", type=float, default=300, help="seconds of the memory soak (default 300)")
    parser.add_argument("--fanout", type=int, default=500, help="alerts in the fan-out webhook (default 500)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--show", metavar="FILE", help="print the report of an earlier run and exit")
    parser.add_argument(
        "--only", metavar="LOADS", help=f"run only these traffic loads, comma-separated: {', '.join(LOADS)}"
    )
    parser.add_argument("--churn-groups", type=int, default=8, help="groups sending at once (default 8)")
    parser.add_argument("--churn-alerts", type=int, default=50, help="alerts per group (default 50)")
    parser.add_argument("--churn-notifications", type=int, default=40, help="notifications per group (default 40)")
    parser.add_argument("--limit-alerts", type=int, default=150, help="alerts in the rate-limited group (150)")
    parser.add_argument("--limit-per-minute", type=int, default=100, help="events a minute the fake takes (100)")
    parser.add_argument("--limit-cap", type=float, default=150, help="seconds before giving up (default 150)")
    args = parser.parse_args(argv)
    if args.show:
        return show(args.show)
    only = tuple(name.strip() for name in args.only.split(",")) if args.only else None
    if only is not None and not set(only) <= set(LOADS):
        parser.error(f"--only takes {', '.join(LOADS)}")

    workdir = Path(tempfile.mkdtemp(prefix="alert24-bench-"))
    procs = Processes(workdir)
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": vars(args),
    }
    bodies = {}
    for n in (1, 10):
        bodies[n] = workdir / f"body-{n}.json"
        bodies[n].write_bytes(payload(n))
    if only is not None:
        try:
            if "ledger-sweep" in only:
                results["ledger_sweep"] = ledger_sweep() + adapter_sweep(procs, workdir, args)
            if "wire" in only:
                wire_loads(procs, workdir, args, results)
                storm_loads(procs, workdir, args, results)
            if set(only) & {"churn", "rate-limit"}:
                traffic_loads(procs, workdir, args, results, only)
        finally:
            procs.stop_all()
        report_wire(results)
        report_traffic(results)
        report_sweep(results)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"\nresults written to {args.out}")
        return 0
    try:
        fake = InstantAlert24(procs)
        # RESEND_INTERVAL=0: these loads resend one payload, and measure sending it, not skipping it.
        common = {**defaults(fake.url, workdir / "state"), "LOG_FORMAT": "json", "RESEND_INTERVAL": "0"}
        adapter = Gunicorn(procs, "adapter", "wsgi:app", common)
        # The same adapter with the ledger of open incidents on (SQLite, the reconciler's default store).
        ledger_env = {**common, "LEDGER_URL": f"sqlite://{workdir}/ledger.db"}
        ledgered = Gunicorn(procs, "adapter-ledger", "wsgi:app", ledger_env)
        bare = Gunicorn(procs, "bare", "bench.bare_app:app", common)
        print("installing the Node peers from npm (cached in bench/.cache) …", flush=True)
        node_env = {**common, "SHARED_SECRET": SECRET, "ALERT24_API_KEY": "bench-api-key"}
        node = Node(procs, "article-adapter", "article-adapter.js", node_env)

        print("warming up …", flush=True)
        for server in (adapter, ledgered, bare, node):
            wrk(f"{server.url}/alertmanager", bodies[1], 2, args.connections)

        print("transports …", flush=True)
        results["transport_cpu_us_per_call"] = transports.measure(fake.url)
        results["ledger_cpu_us_per_write"] = ledger_cost.measure()
        results["ledger_sweep"] = ledger_sweep() + adapter_sweep(procs, workdir, args)

        runs: dict[str, list[dict]] = {"adapter-1": [], "bare-1": [], "node-1": [], "adapter-10": [], "ledger-1": []}
        for r in range(args.rounds):
            order = [
                ("adapter-1", adapter, 1),
                ("bare-1", bare, 1),
                ("node-1", node, 1),
                ("adapter-10", adapter, 10),
                ("ledger-1", ledgered, 1),
            ]
            for name, server, n in order if r % 2 == 0 else list(reversed(order)):
                run = saturate(server, fake, bodies[n], n, args.seconds, args.connections)
                runs[name].append(run)
                rate, cpu = run["rate"], run["cpu_ms_per_webhook"]
                print(f"round {r + 1} {name}: {rate:.0f} webhooks/s, {cpu:.3f} ms CPU/webhook", flush=True)
        for name, server in (("adapter", adapter), ("bare", bare)):
            results.setdefault("memory_after_throughput", {})[name] = memory_mb(server.pid)

        def med(name, key):
            return statistics.median(run[key] for run in runs[name])

        for name, rs in runs.items():
            assert all(run["non2xx"] == 0 and run["errors"] == 0 for run in rs), f"{name}: non-2xx answers or errors"
            if name.startswith("adapter"):
                for run in rs:
                    assert run["events"] == run["delivered"] * run["alerts"], f"{name}: events lost"
                    assert 0 <= run["delivered"] - run["webhooks"] <= args.connections, f"{name}: answers lost"
        results["saturation"] = {
            name: {k: med(name, k) for k in ("rate", "cpu_ms_per_webhook", "cpu_share", "fake_cpu_share")}
            for name in runs
        }
        results["saturation_runs"] = runs

        wire_loads(procs, workdir, args, results)
        storm_loads(procs, workdir, args, results)

        # Latency at a moderate steady load, open loop.
        print(f"latency at {args.rate:.0f} webhooks/s …", flush=True)
        skip = fake.count()
        cpu_before = cpu_seconds(adapter.pid)
        latencies = openloop.run(
            "127.0.0.1", adapter.port, "/alertmanager", bodies[1].read_bytes(), SECRET, args.rate, 20
        )
        cpu = cpu_seconds(adapter.pid) - cpu_before
        assert all(status == 200 for _, status in latencies), "non-2xx answers during the latency run"
        fake_times = fake.times(skip)
        assert len(fake_times) == len(latencies), "events lost during the latency run"
        answer = [lat for lat, _ in latencies]
        fake_median = statistics.median(fake_times)
        results["latency"] = {
            "rate": args.rate,
            "requests": len(latencies),
            "p50_ms": 1000 * percentile(answer, 50),
            "p99_ms": 1000 * percentile(answer, 99),
            "fake_p99_ms": 1000 * percentile(fake_times, 99),
            "added_p99_ms": 1000 * (percentile(answer, 99) - fake_median),
            "cpu_ms_per_webhook": 1000 * cpu / len(latencies),
        }

        # Fan-out: one big group against an Alert24 that takes 50 ms per call.
        print(f"fan-out: {args.fanout} alerts at 50 ms per call …", flush=True)
        with FakeAlert24() as slow:
            slow.latency = 0.05
            slow_env = {**common, "ALERT24_API_URL": slow.url}
            # With the ledger on: the 500 entries are written in the webhook's one transaction.
            fan = Gunicorn(
                procs, "adapter-fanout", "wsgi:app", {**slow_env, "LEDGER_URL": f"sqlite://{workdir}/fan-ledger.db"}
            )
            seq = Gunicorn(procs, "sequential", "bench.sequential_app:app", slow_env)
            concurrency = int(os.environ.get("ALERT24_CONCURRENCY", Config().concurrency))
            times, cpus = [], []
            for r in range(3):
                before, cpu_before = len(slow.accepted()), cpu_seconds(fan.pid)
                status, seconds = post_once(fan.url, payload(args.fanout, tag=f"fan{r}"))
                assert status == 200, f"fan-out answered {status}"
                assert len(slow.accepted()) - before == args.fanout, "fan-out lost events"
                times.append(seconds)
                cpus.append(cpu_seconds(fan.pid) - cpu_before)
            before = len(slow.accepted())
            status, sequential = post_once(seq.url, payload(args.fanout, tag="seq"), timeout=120)
            assert status == 200 and len(slow.accepted()) - before == args.fanout, "the sequential baseline failed"
            ideal = 0.05 * -(-args.fanout // concurrency)
            results["fanout"] = {
                "alerts": args.fanout,
                "concurrency": concurrency,
                "seconds": statistics.median(times),
                "limit_seconds": 1.25 * ideal,
                "sequential_seconds": sequential,
                "max_in_flight": slow.max_in_flight,
                "cpu_ms_per_webhook": 1000 * statistics.median(cpus),
            }

        # Memory over a soak at the moderate rate.
        if args.soak > 0:
            print(f"soak: {args.soak:.0f} s at {args.rate:.0f} webhooks/s …", flush=True)
            start_mem = memory_mb(adapter.pid)
            samples = []
            cpu_before = cpu_seconds(adapter.pid)
            chunk = 30.0
            sent = 0
            elapsed = 0.0
            while elapsed < args.soak:
                span = min(chunk, args.soak - elapsed)
                lat = openloop.run(
                    "127.0.0.1", adapter.port, "/alertmanager", bodies[1].read_bytes(), SECRET, args.rate, span
                )
                assert all(status == 200 for _, status in lat), "non-2xx answers during the soak"
                sent += len(lat)
                elapsed += span
                samples.append(round(memory_mb(adapter.pid)["rss"], 1))
            results["soak"] = {
                "seconds": args.soak,
                "webhooks": sent,
                "start": start_mem,
                "end": memory_mb(adapter.pid),
                "rss_samples_mb": samples,
                "cpu_ms_per_webhook": 1000 * (cpu_seconds(adapter.pid) - cpu_before) / max(sent, 1),
            }
        traffic_loads(procs, workdir, args, results, LOADS)
    finally:
        procs.stop_all()

    report(results)
    report_wire(results)
    report_traffic(results)
    report_sweep(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {args.out}")
    return 0


def wire_loads(procs: Processes, workdir: Path, args, results: dict) -> None:
    """Every webhook carrying new alerts (1 or 10), and a group of 10 resent with one new alert in it, against the
    adapter at its default settings (the ledger on, resends skipped) and the article's Node adapter, side by side
    in interleaved rounds; the CPU per webhook of each round shows whether the cost grows with the ledger."""
    print("wire loads at default settings: new alerts in every webhook …", flush=True)
    fake = InstantAlert24(procs, "wire-alert24")
    env = defaults(fake.url, workdir / "wire-state")
    adapter = Gunicorn(procs, "wire-adapter", "wsgi:app", env)
    # The same at default settings but without the delivery history: what keeping it costs.
    bare_env = {**env, "STATE_DIRECTORY": str(workdir / "wire-state-no-history"), "HISTORY_RETENTION": "0"}
    no_history = Gunicorn(procs, "wire-adapter-no-history", "wsgi:app", bare_env)
    node = Node(procs, "wire-article-adapter", "article-adapter.js", {**env, **NODE_ENV})
    bodies = {}
    for name, alerts, new in WIRE:
        bodies[name] = workdir / f"wire-{name}.json"
        bodies[name].write_bytes(payload(alerts, tag="wire", new=new))
    servers = (("adapter", adapter), ("no-history", no_history), ("node", node))
    for _, server in servers:
        wrk(f"{server.url}/alertmanager", bodies["new-1"], 2, args.connections)
    runs: dict[str, dict[str, list[dict]]] = {name: {who: [] for who, _ in servers} for name, _, _ in WIRE}
    order = [(name, alerts, who, server) for name, alerts, _ in WIRE for who, server in servers]
    for r in range(args.rounds):
        for name, alerts, who, server in order if r % 2 == 0 else list(reversed(order)):
            run = saturate(server, fake, bodies[name], alerts, args.seconds, args.connections)
            runs[name][who].append(run)
            print(
                f"round {r + 1} {name} {who}: {run['rate']:.0f} webhooks/s, {run['cpu_ms_per_webhook']:.3f} ms "
                f"CPU/webhook, {run['events'] / max(run['webhooks'], 1):.2f} calls/webhook",
                flush=True,
            )
    for name, _, new in WIRE:
        for who, rs in runs[name].items():
            assert all(run["non2xx"] == 0 and run["errors"] == 0 for run in rs), f"{name} {who}: non-2xx answers"
        for run in runs[name]["adapter"] + runs[name]["no-history"]:
            # Every new alert reaches Alert24; a resent group's known alerts only until the ledger holds them.
            assert run["events"] >= run["delivered"] * new, f"{name}: events lost"
            if new == run["alerts"]:
                assert run["events"] == run["delivered"] * new, f"{name}: events lost"
    results["wire"] = runs


def storm_loads(procs: Processes, workdir: Path, args, results: dict) -> None:
    """The storm: many more concurrent webhooks, each with a new alert, than a thread pool has, against an
    Alert24 answering after 50 ms; the adapter at default settings and the Node adapter."""
    print(f"storm: {args.storm_connections} connections, Alert24 at 50 ms …", flush=True)
    slow_storm = SlowAlert24(procs, "storm-alert24")
    env = defaults(slow_storm.api_url, workdir / "storm-state")
    storm_adapter = Gunicorn(procs, "storm-adapter", "wsgi:app", env)
    storm_node = Node(procs, "storm-article-adapter", "article-adapter.js", {**env, **NODE_ENV})
    body = workdir / "storm.json"
    body.write_bytes(payload(1, tag="storm", new=1))
    for server in (storm_adapter, storm_node):
        wrk(f"{server.url}/alertmanager", body, 2, args.storm_connections)
    storms: dict[str, list[dict]] = {"adapter": [], "node": []}
    for r in range(args.rounds):
        order = [("adapter", storm_adapter), ("node", storm_node)]
        for name, server in order if r % 2 == 0 else list(reversed(order)):
            run = storm(server, slow_storm, body, args.seconds, args.storm_connections)
            storms[name].append(run)
            print(
                f"round {r + 1} storm {name}: {run['rate']:.0f} webhooks/s, p99 {run['p99_ms']:.0f} ms, "
                f"idle {run['idle_share']:.0%}, {run['cpu_ms_per_webhook']:.3f} ms CPU/webhook",
                flush=True,
            )
    for run in storms["adapter"]:
        assert run["non2xx"] == 0 and run["errors"] == 0, "storm: non-2xx answers or errors"
        assert run["events"] == run["delivered"], "storm: events lost"
    results["storm"] = {
        name: {
            k: statistics.median(run[k] for run in rs)
            for k in ("rate", "p99_ms", "cpu_ms_per_webhook", "cpu_share", "idle_share")
        }
        for name, rs in storms.items()
    }
    for name, rs in storms.items():
        results["storm"][name]["non2xx"] = sum(run["non2xx"] + run["errors"] for run in rs)
    results["storm"]["max_in_flight_at_alert24"] = slow_storm.stats()["max_in_flight"]
    results["storm"]["adapter_in_flight_limit"] = int(
        os.environ.get("ALERT24_MAX_IN_FLIGHT", Config().max_in_flight)
    ) * int(os.environ.get("WEB_CONCURRENCY", 0) or max(2, min(os.cpu_count() or 1, 4)))
    results["storm_runs"] = storms
    for server in (storm_adapter, storm_node, slow_storm):
        server.process.stop()


def report_wire(r: dict) -> None:
    """The wire loads' table, when they ran: webhooks/s side by side, the CPU of each round, and calls."""
    if "wire" not in r:
        return
    print(
        "\n| default settings, new alerts | adapter webhooks/s | Node webhooks/s | ratio | goal | met "
        "| adapter CPU ms/webhook by round | last round vs first | Node CPU ms/webhook | Alert24 calls/webhook "
        "(adapter, Node) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in r["wire"].items():
        a, n = runs["adapter"], runs["node"]
        rate_a, rate_n = (statistics.median(run["rate"] for run in rs) for rs in (a, n))
        ratio, goal = rate_a / rate_n, WIRE_GOALS[name]
        cpus = [run["cpu_ms_per_webhook"] for run in a]
        calls = [sum(run["events"] for run in rs) / max(sum(run["webhooks"] for run in rs), 1) for rs in (a, n)]
        print(
            f"| {name} | {rate_a:.0f} | {rate_n:.0f} | {ratio:.2f}x | >= {goal}x | {'yes' if ratio >= goal else 'NO'} "
            f"| {' / '.join(f'{c:.3f}' for c in cpus)} | {cpus[-1] / cpus[0]:.2f}x "
            f"| {statistics.median(run['cpu_ms_per_webhook'] for run in n):.3f} | {calls[0]:.2f}, {calls[1]:.2f} |"
        )
    if "storm" in r:
        sa, sn = r["storm"]["adapter"], r["storm"]["node"]
        cpus = [run["cpu_ms_per_webhook"] for run in r["storm_runs"]["adapter"]]
        ratio = sa["rate"] / sn["rate"]
        print(
            f"| storm, {r['settings']['storm_connections']} connections, Alert24 at 50 ms | {sa['rate']:.0f} "
            f"| {sn['rate']:.0f} | {ratio:.2f}x | >= 1.0x, p99 <= half of Node's "
            f"| {'yes' if ratio >= 1.0 and sa['p99_ms'] <= sn['p99_ms'] / 2 else 'NO'} "
            f"| {' / '.join(f'{c:.3f}' for c in cpus)} | {cpus[-1] / cpus[0]:.2f}x "
            f"| {sn['cpu_ms_per_webhook']:.3f} | p99 {sa['p99_ms']:.0f} ms vs {sn['p99_ms']:.0f} ms |"
        )
    if all("no-history" in runs for runs in r["wire"].values()):
        print(
            "\n| the delivery history's cost | CPU ms/webhook, history kept | without (HISTORY_RETENTION=0) | ratio |"
        )
        print("|---|---|---|---|")
        for name, runs in r["wire"].items():
            kept, bare = (
                statistics.median(run["cpu_ms_per_webhook"] for run in runs[w]) for w in ("adapter", "no-history")
            )
            print(f"| {name} | {kept:.3f} | {bare:.3f} | {kept / bare:.2f}x |")


def traffic_loads(procs: Processes, workdir: Path, args, results: dict, only) -> None:
    """The two traffic loads (bench/traffic.py), each against the adapter with its default settings and the
    article's Node adapter side by side."""
    print("installing the Node peers from npm (cached in bench/.cache) …", flush=True)
    node_modules()
    if "churn" in only:
        g, m, n = args.churn_groups, args.churn_alerts, args.churn_notifications
        print(f"churn: {g} groups of {m} alerts, {n} notifications each, one alert changing each time …", flush=True)
        fake = InstantAlert24(procs, "churn-alert24")
        env = defaults(fake.url, workdir / "churn-state")
        adapter = Gunicorn(procs, "churn-adapter", "wsgi:app", env)
        node = Node(procs, "churn-article-adapter", "article-adapter.js", {**env, **NODE_ENV})
        results["churn"] = {
            name: traffic.churn(server.port, fake.count, g, m, n)
            for name, server in (("adapter", adapter), ("node", node))
        }
        for name, run in results["churn"].items():
            assert run["non2xx"] == 0, f"churn: {name} answered non-2xx"
        for name, run in results["churn"].items():
            print(
                f"churn {name}: {run['first_calls_per_notification']:.1f} calls for a group's first notification, "
                f"{run['calls_per_notification']:.2f} per notification after it, {run['rate']:.0f} webhooks/s",
                flush=True,
            )
    if "rate-limit" in only:
        k, m = args.limit_per_minute, args.limit_alerts
        print(f"rate limit: {m} alerts, Alert24 taking {k} events a minute (up to {args.limit_cap:.0f} s) …")
        fakes = {name: FakeAlert24().__enter__() for name in ("adapter-budget", "adapter", "node")}
        try:
            for fake in fakes.values():
                fake.rate_limit(k, 60.0)
            servers = {}
            for name, fake in fakes.items():
                env = defaults(fake.url, workdir / f"limit-{name}-state")
                if name == "adapter-budget":
                    env["ALERT24_RATE_LIMIT"] = str(int(k * 0.9))
                if name == "node":
                    servers[name] = Node(procs, "limit-article-adapter", "article-adapter.js", {**env, **NODE_ENV})
                else:
                    servers[name] = Gunicorn(procs, f"limit-{name}", "wsgi:app", env)
            jobs = {
                name: (lambda s=servers[name], f=fake: traffic.rate_limited(s.port, f, m, args.limit_cap))
                for name, fake in fakes.items()
            }
            results["rate_limit"] = {"per_minute": k, "budget": int(k * 0.9), **traffic.run_together(jobs)}
        finally:
            for fake in fakes.values():
                fake.__exit__(None, None, None)
        for name in fakes:
            run = results["rate_limit"][name]
            state = f"done in {run['seconds']:.0f} s" if run["done"] else f"not done after {run['seconds']:.0f} s"
            print(f"rate limit {name}: {state}, {run['calls']} calls, {run['calls_429']} answered 429", flush=True)


def ledger_sweep() -> list[dict]:
    """The ledger's CPU per event with 1k, 100k and 1M open keys (bench/ledger_cost.py), SQLite and a local
    PostgreSQL started as the tests start one."""
    from tests.postgres import Postgres

    print("ledger sweep: 1k, 100k and 1M open keys, SQLite and PostgreSQL …", flush=True)
    server = Postgres().start()
    try:
        return ledger_cost.sweep(server.url)
    finally:
        server.stop()


def adapter_sweep(procs: Processes, workdir: Path, args) -> list[dict]:
    """The same sweep through the whole adapter at its default settings (SQLite under STATE_DIRECTORY): its CPU
    per event, with the ledger pre-filled with 1k, 100k and 1M open keys, for webhooks of a group of 10 whose 9
    alerts are pre-filled keys (skipped: Alert24 holds them) and 1 new."""
    fake = InstantAlert24(procs, "sweep-alert24")
    body = workdir / "sweep.json"
    body.write_bytes(payload(10, tag="sweep", new=1, known=9))
    episode = mapping.episode([json.loads(body.read_text())["alerts"][0]["startsAt"]])
    out = []
    for size in ledger_cost.SIZES:
        state = workdir / f"sweep-{size}"
        ledger_cost.prefill_file(state / LEDGER_FILE, size, episode)
        env = defaults(fake.url, state)
        server = Gunicorn(procs, f"sweep-adapter-{size}", "wsgi:app", env)
        keys = {"BENCH_KNOWN": str(size), "BENCH_STRIPES": "9"}
        wrk(f"{server.url}/alertmanager", body, 2, args.connections, keys)
        runs = [saturate(server, fake, body, 10, args.seconds, args.connections, keys) for _ in range(args.rounds)]
        server.process.stop()
        for run in runs:
            assert run["non2xx"] == 0 and run["errors"] == 0, "adapter sweep: non-2xx answers"
            # Only the new alert of each webhook reaches Alert24: the pre-filled ones are proven held (give or take
            # the webhooks still in flight when either count was read).
            assert abs(run["events"] - run["delivered"]) <= args.connections, "adapter sweep: calls"
        per_event = [1000 * run["cpu_ms_per_webhook"] / 10 for run in runs]
        out.append({"store": "adapter, SQLite", "size": size, "cpu_us_per_event": per_event})
        print(f"  adapter {size:>9,} open keys: {' '.join(f'{x:.1f}' for x in per_event)} µs/event", flush=True)
    return out


def report_sweep(r: dict) -> None:
    """The ledger sweep's table, when it ran: CPU per event by ledger size, each round, and against 1k keys."""
    if "ledger_sweep" not in r:
        return
    print("\n| ledger (webhooks of 10 alerts, 9 of them held by Alert24) | open keys | CPU µs per event, by round "
          "| median vs 1k keys | last round vs first |")  # fmt: skip
    print("|---|---|---|---|---|")
    sweep = r["ledger_sweep"]
    base = {row["store"]: statistics.median(row["cpu_us_per_event"]) for row in sweep if row["size"] == 1000}
    for row in sweep:
        rounds = row["cpu_us_per_event"]
        median = statistics.median(rounds)
        print(
            f"| {row['store']} | {row['size']:,} | {' / '.join(f'{x:.1f}' for x in rounds)} | "
            f"{median / base[row['store']]:.2f}x | {rounds[-1] / rounds[0]:.2f}x |"
        )


def report_traffic(r: dict) -> None:
    """The traffic loads' rows, when they ran."""
    if "churn" not in r and "rate_limit" not in r:
        return
    print("\n| traffic load | adapter | Node adapter (article) |")
    print("|---|---|---|")
    if "churn" in r:
        a, n = r["churn"]["adapter"], r["churn"]["node"]
        shape = f"{a['groups']} groups of {a['alerts']}, {a['notifications']} notifications"
        print(
            f"| churn ({shape}): Alert24 calls per notification, one alert changing | "
            f"{a['calls_per_notification']:.2f} | {n['calls_per_notification']:.2f} |"
        )
        print(
            f"| churn: calls for a group's first notification (every alert new) | "
            f"{a['first_calls_per_notification']:.1f} | {n['first_calls_per_notification']:.1f} |"
        )
        print(f"| churn: webhooks/s, one alert changing | {a['rate']:.0f} | {n['rate']:.0f} |")
    if "rate_limit" in r:
        rl = r["rate_limit"]

        def cell(run):
            state = (
                f"all {run['alerts']} in {run['seconds']:.0f} s"
                if run["done"]
                else (f"{run['accepted_alerts']} of {run['alerts']} after {run['seconds']:.0f} s")
            )
            return f"{state}, {run['calls']} calls, {run['calls_429']} × 429"

        head = f"rate limit ({rl['adapter']['alerts']} alerts, {rl['per_minute']}/min)"
        print(f"| {head}, ALERT24_RATE_LIMIT={rl['budget']} | {cell(rl['adapter-budget'])} | |")
        print(f"| {head}, no budget (backpressure only) | {cell(rl['adapter'])} | {cell(rl['node'])} |")


def report(r: dict) -> None:
    s = r["saturation"]
    a1, b1, a10 = s["adapter-1"], s["bare-1"], s["adapter-10"]
    n1 = s.get("node-1")
    cpu_ratio = a1["cpu_ms_per_webhook"] / b1["cpu_ms_per_webhook"]
    lat = r["latency"]
    mem = r["memory_after_throughput"]["adapter"]
    rows = []
    if "storm" in r:
        st = r["storm"]
        sa, sn = st["adapter"], st["node"]
        rows += [
            (
                "1 storm: machine idle, non-2xx, p99",
                f"idle {sa['idle_share']:.0%}, {sa['non2xx']} non-2xx, p99 {sa['p99_ms']:.0f} ms",
                f"Node p99 {sn['p99_ms']:.0f} ms",
                "idle < 10%, 0, <= 2 s",
                sa["idle_share"] < 0.10 and sa["non2xx"] == 0 and sa["p99_ms"] <= 2000,
                "",
            ),
            (
                "4 storm: calls in flight at Alert24",
                f"{st['max_in_flight_at_alert24']}",
                f"limit {st['adapter_in_flight_limit']}",
                "<= workers x ALERT24_MAX_IN_FLIGHT",
                st["max_in_flight_at_alert24"] <= st["adapter_in_flight_limit"],
                "",
            ),
        ]
    if n1:
        node_ratio = a1["rate"] / n1["rate"]
        rows.append(
            (
                "2 1-alert webhooks/s vs Node adapter",
                f"{a1['rate']:.0f} vs {n1['rate']:.0f}",
                f"{node_ratio:.2f}x",
                ">= 1.0x",
                node_ratio >= 1.0,
                f"{a1['cpu_ms_per_webhook']:.3f} (Node {n1['cpu_ms_per_webhook']:.3f})",
            )
        )
    rows += [
        (
            "2 CPU per 1-alert webhook vs bare Flask",
            f"{a1['cpu_ms_per_webhook']:.3f} vs {b1['cpu_ms_per_webhook']:.3f} ms",
            f"{cpu_ratio:.2f}x",
            "<= 2.5x",
            cpu_ratio <= 2.5,
            f"{a1['cpu_ms_per_webhook']:.3f}",
        ),
        (
            "- events/s, 10-alert vs 1-alert webhooks",
            f"{a10['rate'] * 10:.0f} vs {a1['rate']:.0f}",
            f"{a10['rate'] * 10 / a1['rate']:.1f}x",
            "(information)",
            None,
            f"{a10['cpu_ms_per_webhook']:.3f}",
        ),
    ]
    ledger = s.get("ledger-1")
    if ledger:
        ledger_ratio = ledger["cpu_ms_per_webhook"] / a1["cpu_ms_per_webhook"]
        rows.append(
            (
                "L CPU per webhook, ledger on vs off",
                f"{ledger['cpu_ms_per_webhook']:.3f} vs {a1['cpu_ms_per_webhook']:.3f} ms",
                f"{ledger_ratio:.2f}x",
                "<= 1.10x",
                ledger_ratio <= 1.10,
                f"{ledger['cpu_ms_per_webhook']:.3f}",
            )
        )
    if "fanout" in r:
        f = r["fanout"]
        rows += [
            (
                f"3 fan-out {f['alerts']} alerts, 50 ms/call, ledger on",
                f"{f['seconds']:.2f} s",
                f"limit {f['limit_seconds']:.2f} s",
                "<= 1.25 x ideal",
                f["seconds"] <= f["limit_seconds"],
                f"{f['cpu_ms_per_webhook']:.1f}",
            ),
            (
                "3 fan-out vs sequential",
                f"{f['seconds']:.2f} vs {f['sequential_seconds']:.1f} s",
                f"{f['sequential_seconds'] / f['seconds']:.0f}x",
                ">= 20x",
                f["sequential_seconds"] / f["seconds"] >= 20,
                "",
            ),
        ]
    rows.append(
        (
            f"3 p99 added latency at {lat['rate']:.0f}/s",
            f"p50 {lat['p50_ms']:.2f} p99 {lat['p99_ms']:.2f} ms",
            f"{lat['added_p99_ms']:.2f} ms",
            "<= 5 ms",
            lat["added_p99_ms"] <= 5,
            f"{lat['cpu_ms_per_webhook']:.3f}",
        )
    )
    rows.append(
        (
            "3 RSS after throughput (PSS)",
            f"{mem['rss']:.0f} MB ({mem['pss']:.0f} MB)",
            f"peak {mem['peak_rss']:.0f} MB",
            "<= 120 MB",
            mem["rss"] <= 120,
            "",
        )
    )
    if "soak" in r:
        k = r["soak"]
        growth = k["end"]["rss"] - k["start"]["rss"]
        rows.append(
            (
                f"3 soak {k['seconds']:.0f} s RSS start -> end",
                f"{k['start']['rss']:.1f} -> {k['end']['rss']:.1f} MB",
                f"{growth:+.1f} MB",
                "no growth",
                growth <= 2.0,
                f"{k['cpu_ms_per_webhook']:.3f}",
            )
        )
    print("\n| target | measured | ratio | goal | met | CPU ms/webhook |")
    print("|---|---|---|---|---|---|")
    for name, measured, ratio, goal, ok, cpu in rows:
        met = "" if ok is None else "yes" if ok else "NO"
        print(f"| {name} | {measured} | {ratio} | {goal} | {met} | {cpu} |")
    print("\n| one POST to the fake, in-process | CPU µs per call |")
    print("|---|---|")
    for name, micros in r["transport_cpu_us_per_call"].items():
        print(f"| {name} | {micros:.0f} |")
    if "ledger_cpu_us_per_write" in r:
        w = r["ledger_cpu_us_per_write"]
        share = w["trigger"] / 1000 / a1["cpu_ms_per_webhook"]
        print("\n| one ledger write (SQLite, WAL), in-process | CPU µs | share of a 1-alert webhook's CPU |")
        print("|---|---|---|")
        print(f"| trigger (upsert) | {w['trigger']:.0f} | {share:.1%} |")
        print(f"| resolve (delete) | {w['resolve']:.0f} | |")
    print(
        f"\nfake Alert24 (nginx) CPU share during saturation: {a1['fake_cpu_share']:.0%} of one core; "
        f"adapter {a1['cpu_share']:.0%}, bare Flask {b1['cpu_share']:.0%}"
        + (f", Node adapter {n1['cpu_share']:.0%}" if n1 else "")
    )


if __name__ == "__main__":
    sys.exit(main())
