"""CPU per ledger write as a webhook makes it: one 1-event transaction into a SQLite file in WAL mode."""

from __future__ import annotations

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
