"""Real processes for the end-to-end tests: gunicorn, Alertmanager, amtool and nginx, all on 127.0.0.1.

The adapter runs from the production install (`make production`: the hashed lock, then the package without
its dependencies, as the Containerfile builds it), from a directory holding only wsgi.py and gunicorn.conf.py,
as the image's /app does: what is tested is what users deploy, not the developers' venv.

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
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INSTALL_HINT = "install it with: apt-get install prometheus-alertmanager nginx postgresql (or run `make test`)"
# The production venv; ADAPTER_VENV may name another one built the same way.
PRODUCTION = pathlib.Path(os.environ.get("ADAPTER_VENV") or ROOT / ".venv-prod")
# What the image copies into /app beside the installed package.
APP_FILES = ("wsgi.py", "gunicorn.conf.py")
PORT_CLASH = "address already in use"


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
    """A port that was free a moment ago: for programs that cannot take a bound socket, which then retry on a
    clash (see `start_on_free_port`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """A listening socket on 127.0.0.1, bound before anyone is told its port, handed to gunicorn as fd://N:
    no other process can take the port in between."""

    def __init__(self, port: int = 0, listen: bool = True):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", port))
        # Bound but not listening, the port refuses every connection, and no other process can take it.
        if listen:
            self.socket.listen(128)
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def fd(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()


def start_on_free_port(start, attempts: int = 3):
    """Call start(port) with a free port, again with another one when the program lost a race for it."""
    for attempt in range(attempts):
        try:
            return start(free_port())
        except PortClash:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class PortClash(AssertionError):
    """A program could not listen on the port chosen for it: another process took it first."""


def production_app(workdir: pathlib.Path) -> pathlib.Path:
    """A fresh application directory like the image's /app: wsgi.py and gunicorn.conf.py, no source tree."""
    app = workdir
    app.mkdir(parents=True, exist_ok=True)
    for name in APP_FILES:
        shutil.copy(ROOT / name, app / name)
    return app


def production_bin(program: str, venv: pathlib.Path = PRODUCTION) -> str:
    """A program of the production install (built by `make production`, or the e2e session fixture), or of
    another venv."""
    path = venv / "bin" / program
    if not path.exists():
        raise AssertionError(f"{path} is missing: build the production install with `make production`")
    return str(path)


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


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as r:  # noqa: S310
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


def self_signed(workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl; the certificate is its own CA."""
    cert, key = workdir / "tls.pem", workdir / "tls.key"
    subprocess.run(
        [
            binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


class Process:
    """A child process in its own session, with its output in a file, stopped by pid."""

    def __init__(
        self, name: str, argv: list[str], workdir: pathlib.Path, env: dict | None = None, cwd=None, pass_fds=()
    ):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - a restart appends to the same log
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
            pass_fds=pass_fds,
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
    """The production install under gunicorn, started as users start it: `gunicorn wsgi:app` in an app directory,
    reading the shipped gunicorn.conf.py, listening on a socket bound beforehand."""

    def __init__(
        self,
        procs: Processes,
        env: dict[str, str],
        name: str = "adapter",
        listener: Listener | None = None,
        venv: pathlib.Path = PRODUCTION,
    ):
        # A test may bind the listener first, e.g. to give its port to Alertmanager before the adapter starts.
        listener = listener or Listener(int(env.get("PORT", 0)))
        self.port = listener.port
        self.url = listener.url
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "LOG_FORMAT": "json",
            # The default ledger lives here, never in the machine's /var/lib/alert24-adapter.
            "STATE_DIRECTORY": str(procs.workdir / f"{name}-state"),
            **env,
            "PORT": str(self.port),
        }
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        full_env.pop("VIRTUAL_ENV", None)
        self.process = procs.start(
            name,
            [production_bin("gunicorn", venv), "--bind", f"fd://{listener.fd}", "wsgi:app"],
            env=full_env,
            cwd=production_app(procs.workdir / f"{name}-app"),
            pass_fds=(listener.fd,),
        )
        # gunicorn holds the socket now; the test's copy is closed so that it goes when gunicorn goes.
        listener.close()
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

    def wait_webhook(self, predicate, timeout: float = 20, what: str = "the webhook", since: int = 0) -> dict:
        """The first webhook answered (and logged) after the first `since` whose line satisfies predicate.

        The adapter logs a webhook once it has its answer, after Alert24 answered: wait for this, not for the
        fake's record of the call, before reading what the adapter answered."""
        return wait_until(lambda: next((w for w in self.webhooks()[since:] if predicate(w)), None), timeout, what)

    def wait_log(self, predicate, timeout: float = 20, what: str = "the log line", since: int = 0) -> dict:
        """The first JSON log line after the first `since` that satisfies predicate."""
        return wait_until(lambda: next((w for w in self.log_lines()[since:] if predicate(w)), None), timeout, what)


class Alertmanager:
    """A real Alertmanager with a generated configuration, alone (no gossip cluster)."""

    def __init__(
        self,
        procs: Processes,
        webhook_url: str,
        name: str = "alertmanager",
        http_config: dict | None = None,
        group_interval: str = "2s",
        route: dict | None = None,
        also: tuple[str, ...] = (),
    ):
        """`route` overrides settings of the root route, e.g. {"group_wait": "0s", "repeat_interval": "1s"}; `also`
        names more webhook URLs that every alert is sent to as well (child routes with `continue: true`)."""
        exe = binary("prometheus-alertmanager", "alertmanager")
        self.amtool = binary("amtool")
        http_config = http_config or {}
        workdir = procs.workdir / name
        workdir.mkdir()
        config = {
            "route": {
                "receiver": "adapter",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": group_interval,
                "repeat_interval": "1h",
                **(route or {}),
            },
            "receivers": [
                {"name": name, "webhook_configs": [{"url": url, "send_resolved": True, "http_config": http_config}]}
                for name, url in [("adapter", webhook_url), *((f"also-{i}", u) for i, u in enumerate(also))]
            ],
        }
        if also:
            receivers = ["adapter", *(f"also-{i}" for i in range(len(also)))]
            config["route"]["routes"] = [{"receiver": r, "continue": True} for r in receivers]
        (workdir / "alertmanager.yml").write_text(json.dumps(config))
        argv = [
            exe,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.external-url=http://{name}.example:9093",
        ]
        argv.append("--cluster.listen-address=")
        self.procs, self.name, self.argv = procs, name, argv
        self._starts: dict[frozenset, str] = {}  # each firing alert's startsAt, by its labels
        self.port = 0
        start_on_free_port(self._start)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start again, on the same port and data directory, and wait until it is ready."""
        self._start(self.port)

    def _start(self, port: int) -> None:
        self.port = port
        self.process = self.procs.start(self.name, [*self.argv, f"--web.listen-address=127.0.0.1:{port}"])
        wait_until(lambda: http_ok(f"{self.url}/-/ready") or not self.process.alive(), 20, f"{self.name} to be ready")
        if not self.process.alive():
            output = self.process.output()
            raise (PortClash if PORT_CLASH in output else AssertionError)(f"{self.name} did not start:\n{output}")

    def stop(self) -> None:
        self.process.stop()

    def silence(self, *matchers: str) -> None:
        """Silence alerts with amtool for an hour."""
        self._amtool("silence", "add", *matchers, "--comment=e2e", "--author=e2e", "--duration=1h")

    def fire(self, *labels: str, annotations: dict | None = None) -> None:
        """Fire an alert with amtool, as Prometheus does: a firing episode that starts now, unless the alert fires
        already (then the episode goes on, its startsAt kept)."""
        start = self._starts.setdefault(frozenset(labels), rfc3339(time.time()))
        notes = [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
        self._amtool("alert", "add", *labels, f"--start={start}", *notes)

    def resolve(self, *labels: str) -> None:
        """Resolve an alert with amtool, as Prometheus does: its episode's startsAt, ending now (an alert this
        harness did not fire ends in the past)."""
        start = self._starts.pop(frozenset(labels), None)
        if start is None:
            self._amtool("alert", "add", *labels, "--end=2000-01-01T00:00:00Z")
        else:
            self._amtool("alert", "add", *labels, f"--start={start}", f"--end={rfc3339(time.time())}")

    def _amtool(self, *args: str) -> None:
        subprocess.run(
            [self.amtool, f"--alertmanager.url={self.url}", *args],
            check=True,
            timeout=15,
            capture_output=True,
        )


def rfc3339(at: float) -> str:
    """A Unix time as Alertmanager's API takes it: UTC, milliseconds, Z."""
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_alerts(url: str, alerts: list[dict]) -> None:
    """Push many alerts at once through Alertmanager's v2 API (amtool adds one per call)."""
    req = urllib.request.Request(  # noqa: S310
        f"{url}/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        assert r.status == 200


class Nginx:
    """Debian's nginx in front of the adapter, serving deploy/nginx/alert24-adapter.conf rendered for loopback,
    with a self-signed certificate for 127.0.0.1 (`ca_file`, `tls` to trust it)."""

    SITE = ROOT / "deploy" / "nginx" / "alert24-adapter.conf"

    def __init__(self, procs: Processes, upstream_port: int):
        exe = binary("nginx")
        workdir = procs.workdir / "nginx"
        workdir.mkdir()
        self.ca_file, self.key_file = self_signed(workdir)
        self.tls = ssl.create_default_context(cafile=str(self.ca_file))
        self.exe, self.workdir, self.procs, self.upstream_port = exe, workdir, procs, upstream_port
        start_on_free_port(self._start)

    def _start(self, port: int) -> None:
        exe, workdir, procs, upstream_port = self.exe, self.workdir, self.procs, self.upstream_port
        self.port = port
        self.url = f"https://127.0.0.1:{self.port}"
        site = self.SITE.read_text()
        for old, new in (
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;"),
            ("/etc/ssl/certs/alert24-adapter.example.com.pem;", f"{self.ca_file};"),
            ("/etc/ssl/private/alert24-adapter.example.com.key;", f"{self.key_file};"),
            ("/var/log/nginx/alert24-adapter.access.log ", f"{workdir / 'site-access.log'} "),
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
        wait_until(lambda: http_ok(f"{self.url}/healthz", self.tls) or not self.process.alive(), 15, "nginx to proxy")
        if not self.process.alive():
            output = self.process.output()
            raise (PortClash if PORT_CLASH in output else AssertionError)(f"nginx did not start:\n{output}")


def webhook_head(content_length: int, path: str = "/alertmanager", secret: str = "", close: bool = False) -> bytes:
    """The request line and headers of a webhook POST, written out by hand to control what is sent."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if secret:
        lines.append(f"Authorization: Bearer {secret}")
    if close:
        lines.append("Connection: close")
    lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw_request(
    port: int, head: bytes, body: bytes = b"", timeout: float = 20, tls: ssl.SSLContext | None = None
) -> bytes:
    """Send bytes as they are and read one answer (until its Content-Length is complete or the socket closes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    data = b""
    try:
        sock.sendall(head + body)
        while chunk := _recv(sock):
            data += chunk
            if b"\r\n\r\n" in data:
                headers, _, rest = data.partition(b"\r\n\r\n")
                length = [line for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= int(length[0].split(b":")[1]):
                    break
    finally:
        sock.close()
    return data


def _recv(sock) -> bytes:
    """The next bytes, or none once the peer closed (a TLS peer may close without a close_notify)."""
    try:
        return sock.recv(65536)
    except (ssl.SSLEOFError, ConnectionResetError):
        return b""
