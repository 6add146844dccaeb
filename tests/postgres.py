"""A real PostgreSQL server for the tests: Debian's postgresql, in a temporary directory, on 127.0.0.1.

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged `postgres` user
(created by Debian's package) or `nobody`. Every wait is bounded and the server is stopped by stop().
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from .e2e.harness import binary, free_port


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    # Elsewhere, initdb on PATH; missing, the test is skipped (failed in CI) with how to install it.
    initdb = found[-1] if found else binary("initdb")
    return os.path.dirname(os.path.realpath(initdb))


class Postgres:
    """One server with one database, `alert24`, owned by the user `alert24` with a password."""

    USER, PASSWORD, DATABASE = "alert24", "pg-test-password", "alert24"

    def __init__(self):
        self.bindir = _bindir()
        self.dir = tempfile.mkdtemp(prefix="alert24-adapter-pg-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _exists("postgres") else "nobody"
            os.chown(self.dir, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            self.prefix = ["runuser", "-u", user, "--"]
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")

    @property
    def url(self) -> str:
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/{self.DATABASE}"

    def start(self) -> Postgres:
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as fh:
            fh.write("bootstrap-password\n")
        if self.prefix:
            shutil.chown(pwfile, user=self.prefix[2])
        self._run(
            "initdb", "-D", self.data, "-U", "postgres", "-A", "scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"
        )
        for _ in range(3):
            if self._serve():
                break
            # Another process took the port between choosing and binding it: choose again.
            self.port = free_port()
        else:
            raise AssertionError("PostgreSQL lost the race for a free port three times")
        self.sql(
            f"CREATE ROLE {self.USER} LOGIN PASSWORD '{self.PASSWORD}'",
            f"CREATE DATABASE {self.DATABASE} OWNER {self.USER}",
        )
        return self

    def _serve(self) -> bool:
        """Start the server and wait until it accepts connections; False when its port was taken."""
        argv = [
            *self.prefix,
            os.path.join(self.bindir, "postgres"),
            "-D",
            self.data,
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            self.dir,
            "-c",
            "fsync=off",
            "-c",
            "max_connections=60",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                timeout=10,
            )
            if ready.returncode == 0:
                return True
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log, errors="replace") as fh:
                    output = fh.read()
                if self.proc.poll() is not None and "Address already in use" in output:
                    return False
                raise AssertionError(f"PostgreSQL did not start:\n{output[-2000:]}")
            time.sleep(0.2)

    def sql(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser."""
        import psycopg

        conninfo = f"postgresql://postgres:bootstrap-password@127.0.0.1:{self.port}/{database}"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                conn.execute(statement)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown. It goes to the server itself (its pid file names it),
            # not to runuser, which does not pass it on.
            pid = self.proc.pid
            with contextlib.suppress(OSError, ValueError), open(os.path.join(self.data, "postmaster.pid")) as fh:
                pid = int(fh.readline())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.prefix, os.path.join(self.bindir, tool), *args], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{tool} failed:\n{result.stdout}{result.stderr}"


def _exists(user: str) -> bool:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(user)
        return True
    return False
