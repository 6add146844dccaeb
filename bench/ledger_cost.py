"""The ledger's cost: CPU per write as a webhook makes it (measure), and per event as the ledger grows (sweep)."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time

from adapter.ledger import open_ledger
from adapter.mapping import Event


def measure(writes: int = 2000, rounds: int = 5) -> dict[str, float]:
    """Median CPU microseconds per record() of one trigger, and of one resolve, interleaved over rounds."""
    with tempfile.TemporaryDirectory(prefix="alert24-bench-ledger-") as tmp:
        ledger = open_ledger(f"sqlite://{tmp}/ledger.db")
        ledger.setup()
        payload = {"summary": "Bench alert on host-1", "severity": "warning", "source": "x", "custom_details": {}}
        trigger = Event("0123456789abcdef", "trigger", payload, [], {}, (("0123456789abcdef", "firing"),), "Bench")
        resolve = Event("0123456789abcdef", "resolve", payload, [], {}, (("0123456789abcdef", "resolved"),), "Bench")
        samples: dict[str, list[float]] = {"trigger": [], "resolve": []}
        for _ in range(rounds):
            for name, event in (("trigger", trigger), ("resolve", resolve)):
                started = time.process_time()
                for i in range(writes):
                    ledger.record("", [event], 1_800_000_000.0 + i)
                samples[name].append(1e6 * (time.process_time() - started) / writes)
        ledger.close()
    return {name: statistics.median(values) for name, values in samples.items()}


SIZES = (1_000, 100_000, 1_000_000)
EPISODE = "2026-11-28T13:32:21.417216604Z"
# What Alertmanager sends most: a group of 10 whose 9 alerts Alert24 holds already, and one new.
GROUP, NEW_PER_GROUP = 10, 1


def _prefill(ledger, size: int, now: float, key=lambda i: f"k{i:08d}", episode: str = EPISODE) -> None:
    """`size` open incidents, each with the trigger Alert24 accepted for it, as webhooks would have left them."""
    incidents = [("", key(i), key(i), "Bench", "bench", "warning", now, now) for i in range(size)]
    accepted = [("", key(i), "trigger", "warning", now, episode) for i in range(size)]
    columns = (
        "alert24_adapter_incidents (route, dedup_key, fingerprints, alertname, summary, severity, first_seen, "
        "last_seen)",
        "alert24_adapter_accepted (route, dedup_key, action, severity, accepted_at, episode)",
    )
    if ledger.param == "?":

        def work(cur) -> None:
            for table, rows in zip(columns, (incidents, accepted), strict=True):
                marks = ", ".join("?" * len(rows[0]))
                cur.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

        ledger._run(work, deadline=time.monotonic() + 600)
        return
    conn = ledger._connect()  # COPY, on a connection of its own: a million rows in seconds
    conn.execute("SET statement_timeout = 0")  # the ledger's own 2 s are for webhooks
    with conn, conn.cursor() as cur:
        for table, rows in zip(columns, (incidents, accepted), strict=True):
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        # As autovacuum does within a minute of such a change: without statistics, the planner may use the primary
        # key for the route alone and filter every row of it for the dedup keys.
        cur.execute("ANALYZE alert24_adapter_incidents, alert24_adapter_accepted")


def prefill_file(path, size: int, episode: str) -> None:
    """A SQLite ledger file at `path` with `size` open keys, named as Alertmanager names fingerprints (16 hex
    digits: 0 to size - 1), each accepted for `episode` now."""
    ledger = open_ledger(f"sqlite://{path}")
    ledger.setup()
    now = time.time()
    _prefill(ledger, size, now, key=lambda i: f"{i:016x}", episode=episode)
    ledger.housekeep(now)
    ledger.close()


def _cpu(pid: int | None) -> float:
    """This process's CPU seconds, and the PostgreSQL backend's (`pid`) when given."""
    total = time.process_time()
    if pid is not None:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sweep(postgres_url: str | None = None, sizes=SIZES, webhooks: int = 1500, rounds: int = 3) -> list[dict]:
    """The ledger's work for one webhook as the forwarder does it (one read of the group's keys, decide(), one write
    of what Alert24 accepted and of the refreshes due), with `size` open keys pre-filled: the CPU per event of each
    round (the backend's included for PostgreSQL), for SQLite and, given its URL, PostgreSQL."""
    from adapter.traffic import Settings, decide, refresh_due

    payload = {"summary": "Bench", "severity": "warning", "source": "x", "custom_details": {}}
    stores = [("sqlite", None)] + ([("postgresql", postgres_url)] if postgres_url else [])
    out = []
    for store, url in stores:
        for size in sizes:
            with tempfile.TemporaryDirectory(prefix="alert24-bench-sweep-") as tmp:
                if url is not None:
                    _drop(url)
                ledger = open_ledger(url or f"sqlite://{tmp}/ledger.db", store)
                ledger.setup()
                now = time.time()
                _prefill(ledger, size, now)
                ledger.housekeep(now)  # as each process does every minute: the prefill is no longer in the WAL
                pid = ledger._run(lambda cur: cur.execute("SELECT pg_backend_pid()").fetchone()[0]) if url else None
                rng, fresh = random.Random(size), 0
                per_round = []
                for _ in range(rounds):
                    started = _cpu(pid)
                    for _ in range(webhooks):
                        keys = [f"k{rng.randrange(size):08d}" for _ in range(GROUP - NEW_PER_GROUP)]
                        keys += [f"new-{fresh + i}" for i in range(NEW_PER_GROUP)]
                        fresh += NEW_PER_GROUP
                        events = [Event(k, "trigger", payload, [], {}, ((k, "firing"),), "", EPISODE) for k in keys]
                        at = time.time()
                        known = ledger.known("", keys)
                        choices = [decide(known.get(e.dedup_key), e, at, Settings(3600.0)) for e in events]
                        sent = [e for e, c in zip(events, choices, strict=True) if c.verdict == "send"]
                        due = [
                            e
                            for e, c in zip(events, choices, strict=True)
                            if c.verdict == "skip" and refresh_due(known.get(e.dedup_key), at, 60.0)
                        ]
                        ledger.record("", sent, at, unchanged=due)
                    per_round.append(1e6 * (_cpu(pid) - started) / (webhooks * GROUP))
                ledger.close()
            out.append({"store": store, "size": size, "cpu_us_per_event": per_round})
            print(f"  {store} {size:>9,} open keys: {' '.join(f'{r:.1f}' for r in per_round)} µs/event", flush=True)
    return out


def _drop(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("incidents", "accepted", "budget", "rest", "meta"):
            conn.execute(f"DROP TABLE IF EXISTS alert24_adapter_{table}")
