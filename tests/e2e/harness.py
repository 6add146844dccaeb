"""Real processes for the end-to-end tests: gunicorn, Alertmanager, amtool and nginx, all on 127.0.0.1.

Every wait is bounded and every process started here is stopped by pid, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL_HINT = "install it with: apt-get install prometheus-alertmanager nginx postgresql (or run `make test`)"


def binary(*names: str) -> str:
    """The first of names found on PATH; skip the test outside CI, fail it in CI."""
    for name in names:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path:
            return path
    message = f"{names[0]} is not installed; {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll predicate until it returns something truthy, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


class Process:
    """A child process in its own session, with its output in a file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], workdir: pathlib.Path, env: dict | None = None, cwd=None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


class Processes:
    """Owns every process a test starts and stops them all, in reverse order."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        self.started: list[Process] = []

    def start(self, name: str, argv: list[str], **kw) -> Process:
        p = Process(name, argv, self.workdir, **kw)
        self.started.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.started):
            p.stop()


class Adapter:
    """The adapter under gunicorn with the project's own gunicorn.conf.py."""

    def __init__(self, procs: Processes, env: dict[str, str], name: str = "adapter"):
        # A test may choose the port, e.g. to give it to Alertmanager before the adapter starts.
        self.port = int(env["PORT"]) if "PORT" in env else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "LOG_FORMAT": "json",
            **env,
            "PORT": str(self.port),
        }
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process = procs.start(
            name,
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            env=full_env,
            cwd=ROOT,
        )
        wait_until(lambda: http_ok(f"{self.url}/healthz") or not self.process.alive(), 20, "the adapter to answer")
        if not self.process.alive():
            raise AssertionError(f"the adapter did not start:\n{self.process.output()}")

    def log_lines(self) -> list[dict]:
        """The adapter's JSON log lines (gunicorn's own lines are skipped)."""
        lines = []
        for line in self.process.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def webhooks(self) -> list[dict]:
        """One dict per webhook the adapter answered: outcome, status, counts."""
        return [line for line in self.log_lines() if line.get("logger") == "alert24_adapter.webhook"]


class Alertmanager:
    """A real Alertmanager with a generated configuration, optionally in a gossip cluster."""

    def __init__(
        self,
        procs: Processes,
        webhook_url: str,
        name: str = "alertmanager",
        http_config: dict | None = None,
        cluster_port: int | None = None,
        peers: tuple[int, ...] = (),
        group_interval: str = "2s",
        extra_flags: tuple[str, ...] = (),
    ):
        exe = binary("prometheus-alertmanager", "alertmanager")
        self.amtool = binary("amtool")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir = procs.workdir / name
        workdir.mkdir()
        config = {
            "route": {
                "receiver": "adapter",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": group_interval,
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "adapter",
                    "webhook_configs": [{"url": webhook_url, "send_resolved": True, "http_config": http_config or {}}],
                }
            ],
        }
        (workdir / "alertmanager.yml").write_text(json.dumps(config))
        argv = [
            exe,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url=http://{name}.example:9093",
        ]
        if cluster_port:
            argv += [
                f"--cluster.listen-address=127.0.0.1:{cluster_port}",
                f"--cluster.advertise-address=127.0.0.1:{cluster_port}",
                *[f"--cluster.peer=127.0.0.1:{p}" for p in peers],
            ]
        else:
            argv.append("--cluster.listen-address=")
        self.procs, self.name, self.argv = procs, name, argv + list(extra_flags)
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same port and data directory) and wait until it is ready."""
        self.process = self.procs.start(self.name, self.argv)
        wait_until(lambda: http_ok(f"{self.url}/-/ready") or not self.process.alive(), 20, f"{self.name} to be ready")
        if not self.process.alive():
            raise AssertionError(f"{self.name} did not start:\n{self.process.output()}")

    def stop(self) -> None:
        self.process.stop()

    def silence(self, *matchers: str) -> None:
        """Silence alerts with amtool for an hour."""
        self._amtool("silence", "add", *matchers, "--comment=e2e", "--author=e2e", "--duration=1h")

    def fire(self, *labels: str, annotations: dict | None = None) -> None:
        """Fire an alert with amtool."""
        self._amtool("alert", "add", *labels, *[f"--annotation={k}={v}" for k, v in (annotations or {}).items()])

    def resolve(self, *labels: str) -> None:
        """Resolve an alert with amtool: the same labels, ending in the past."""
        self._amtool("alert", "add", *labels, "--end=2000-01-01T00:00:00Z")

    def _amtool(self, *args: str) -> None:
        subprocess.run(
            [self.amtool, f"--alertmanager.url={self.url}", *args],
            check=True,
            timeout=15,
            capture_output=True,
        )


def post_alerts(url: str, alerts: list[dict]) -> None:
    """Push many alerts at once through Alertmanager's v2 API (amtool adds one per call)."""
    req = urllib.request.Request(  # noqa: S310
        f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        assert r.status == 200


class Nginx:
    """Debian's nginx in front of the adapter, serving deploy/nginx/alert24-adapter.conf rendered for loopback."""

    SITE = ROOT / "deploy" / "nginx" / "alert24-adapter.conf"

    def __init__(self, procs: Processes, upstream_port: int):
        exe = binary("nginx")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir = procs.workdir / "nginx"
        workdir.mkdir()
        site = self.SITE.read_text()
        for old, new in (
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
            ("listen 80;", f"listen 127.0.0.1:{self.port};"),
        ):
            assert old in site, f"the shipped nginx site no longer has {old!r}"
            site = site.replace(old, new)
        (workdir / "site.conf").write_text(site)
        temp = "\n".join(
            f"  {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"""{user}
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 256; }}
http {{
  access_log {workdir / "access.log"};
{temp}
  include {workdir / "site.conf"};
}}
"""
        )
        check = subprocess.run(
            [exe, "-t", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert check.returncode == 0, f"nginx -t refused the shipped site:\n{check.stderr}"
        self.process = procs.start(
            "nginx", [exe, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"]
        )
        wait_until(lambda: http_ok(f"{self.url}/healthz") or not self.process.alive(), 15, "nginx to proxy")
        if not self.process.alive():
            raise AssertionError(f"nginx did not start:\n{self.process.output()}")


def webhook_head(content_length: int, path: str = "/alertmanager", secret: str = "", close: bool = False) -> bytes:
    """The request line and headers of a webhook POST, written out by hand to control what is sent."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if secret:
        lines.append(f"Authorization: Bearer {secret}")
    if close:
        lines.append("Connection: close")
    lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 20) -> bytes:
    """Send bytes as they are and read one answer (until its Content-Length is complete or the socket closes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = b""
    try:
        sock.sendall(head + body)
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                headers, _, rest = data.partition(b"\r\n\r\n")
                length = [line for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= int(length[0].split(b":")[1]):
                    break
    finally:
        sock.close()
    return data
