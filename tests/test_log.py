"""Log lines: JSON by default, readable text on request, each tagged with the webhook's request id."""

import json

import pytest

from .conftest import SECRET


def lines(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_json_lines_carry_the_request_id(post, alert24, capsys):
    post("firing-two-instances", headers={"X-Request-Id": "rid-42"})
    logged = lines(capsys.readouterr().out)
    assert [entry["logger"] for entry in logged] == [
        "alert24_adapter.forwarder",
        "alert24_adapter.forwarder",
        "alert24_adapter.webhook",
    ]
    assert {entry["request_id"] for entry in logged} == {"rid-42"}
    webhook = logged[-1]
    assert webhook["receiver"] == "adapter" and webhook["group_key"] == '{}:{alertname="DiskFull"}'
    assert (webhook["events"], webhook["accepted"], webhook["outcome"], webhook["status"]) == (2, 2, "delivered", 200)
    event = logged[0]
    assert {"dedup_key", "action", "severity", "alert24_status", "attempts", "latency_ms"} <= set(event)


@pytest.mark.parametrize("env_overrides", [{"LOG_FORMAT": "text"}])
def test_text_format_for_people(post, alert24, capsys, env_overrides):
    post("firing-single", headers={"X-Request-Id": "rid-7"})
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2
    assert " INFO    webhook delivered " in out[-1]
    assert "request_id=rid-7" in out[-1] and "status=200" in out[-1]
    assert SECRET not in "\n".join(out)
