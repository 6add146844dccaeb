"""schemathesis against the running service: every operation of adapter/openapi.yaml, every check."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import SECRET


def test_schemathesis_finds_no_5xx_and_no_schema_violation(fake, start_adapter, tmp_path):
    # With the ledger, the reconciler and the heartbeat on, /readyz reports them too, and must match the description.
    adapter = start_adapter(
        LEDGER_URL=f"sqlite://{tmp_path}/ledger.db",
        ALERTMANAGER_URL="http://127.0.0.1:9",
        HEARTBEAT_URL=fake.heartbeat_url(),
    )
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    result = subprocess.run(
        [
            exe,
            "run",
            f"{adapter.url}/openapi.yaml",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {SECRET}",
            "--max-examples",
            "150",
            "--seed",
            "20261128",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    summary = re.search(r"(\d+) generated", result.stdout)
    print(result.stdout[-1500:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary and int(summary.group(1)) >= 150
    assert not [w for w in adapter.webhooks() if w["status"] >= 500]
