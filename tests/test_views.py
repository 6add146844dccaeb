"""POST /alertmanager: authentication, validation before anything is sent, and the status-code contract."""

import base64
import functools
import json

import pytest
import responses

from adapter import create_app, views
from adapter.app import WITHHELD
from adapter.metrics import Metrics

from .conftest import API_KEY, API_URL, INTEGRATION_KEY, SECRET, make_config, payload, sent_bodies


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {SECRET}", id="bearer"),
        pytest.param(f"bearer {SECRET}", id="bearer-lowercase"),
        pytest.param(f"Token {SECRET}", id="any-type"),
        pytest.param(basic("alertmanager", SECRET), id="basic-any-user"),
        pytest.param(basic("", SECRET), id="basic-empty-user"),
    ],
)
def test_accepted_credentials(post, alert24, authorization):
    r = post("firing-single", headers={"Authorization": authorization})
    assert r.status_code == 200
    assert len(alert24.calls) == 1


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="no-credentials"),
        pytest.param("Bearer wrong", id="wrong-token"),
        pytest.param(f"Bearer {SECRET}x", id="secret-prefix"),
        pytest.param(SECRET, id="no-type"),
        pytest.param(basic(SECRET, "wrong"), id="secret-as-basic-user"),
        pytest.param("Basic !!!not-base64", id="basic-garbage"),
        pytest.param(f"Basic {SECRET}", id="basic-undecoded"),
    ],
)
def test_refused_credentials_forward_nothing(post, alert24, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {"Authorization": ""}
    r = post("firing-single", headers=headers)
    assert r.status_code == 401
    assert r.json == {"error": "missing or wrong credentials"}
    assert "Bearer" in r.headers["WWW-Authenticate"] and "Basic" in r.headers["WWW-Authenticate"]
    assert len(alert24.calls) == 0


@pytest.mark.parametrize("env_overrides", [{"SHARED_SECRET": "old-one,new-one"}])
@pytest.mark.parametrize("secret, code", [("old-one", 200), ("new-one", 200), (SECRET, 401)])
def test_secret_rotation_accepts_each_listed_secret(post, alert24, env_overrides, secret, code):
    assert post("firing-single", headers={"Authorization": f"Bearer {secret}"}).status_code == code


@pytest.mark.parametrize("env_overrides", [{"SHARED_SECRET": None, "ALLOW_UNAUTHENTICATED": "true"}])
def test_unauthenticated_mode_accepts_anything(post, alert24, env_overrides):
    assert post("firing-single", headers={"Authorization": ""}).status_code == 200


@pytest.mark.parametrize(
    "body, content_type, code, message",
    [
        pytest.param(b"{}", "text/plain", 415, "must be JSON", id="not-json-content-type"),
        pytest.param(b"{not json", "application/json", 400, "not valid JSON", id="invalid-json"),
        pytest.param(b"\xff\xfe", "application/json", 400, "not UTF-8", id="not-utf8"),
        pytest.param(b"[" * 100000, "application/json", 400, "nested too deeply", id="deeply-nested"),
        pytest.param(b"{}", "application/json", 400, "no 'alerts' list", id="no-alerts"),
        pytest.param(b'{"alerts":[{"status":"firing"}]}', "application/json", 400, "no 'labels'", id="no-labels"),
        pytest.param(
            b'{"alerts":[{"status":"x","labels":{}}]}', "application/json", 400, "status must be", id="bad-status"
        ),
        pytest.param(
            b'{"alerts":[{"status":"firing","labels":{}},{"status":"x","labels":{}}]}',
            "application/json",
            400,
            "alerts[1].status",
            id="one-bad-alert-sends-nothing",
        ),
    ],
)
def test_bad_requests_get_json_errors_and_forward_nothing(client, alert24, body, content_type, code, message):
    r = client.post(
        "/alertmanager", data=body, headers={"Authorization": f"Bearer {SECRET}", "Content-Type": content_type}
    )
    assert r.status_code == code
    assert message in r.json["error"]
    assert len(alert24.calls) == 0


def test_error_does_not_echo_input(post, alert24):
    r = post({"alerts": [{"status": "<script>alert(1)</script>", "labels": {}}]})
    assert r.status_code == 400 and "<script>" not in r.get_data(as_text=True)


@pytest.mark.parametrize("env_overrides", [{"MAX_BODY_BYTES": "2048"}])
def test_body_over_the_limit_is_413_before_reading(client, alert24, env_overrides):
    r = client.post(
        "/alertmanager",
        data=b"x" * 4096,
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "error" in r.json
    assert len(alert24.calls) == 0


def test_delivered_answers_200_with_counts(post, alert24):
    r = post("mixed-one-resolved")
    assert r.status_code == 200
    assert r.json == {"ok": True, "events": 2, "trigger": 1, "resolve": 1, "accepted": 2, "rejected": 0, "failed": 0}
    bodies = sent_bodies(alert24)
    assert {(b["dedup_key"], b["event_action"]) for b in bodies} == {
        ("913c8c434ab89a6b", "resolve"),
        ("55b97254facb078e", "trigger"),
    }
    assert all(b["integration_key"] == INTEGRATION_KEY for b in bodies)


def test_same_payload_twice_sends_the_same_events(post, alert24):
    post("firing-two-instances")
    post("firing-two-instances")
    bodies = sent_bodies(alert24)
    assert bodies[:2] == bodies[2:]


@pytest.mark.parametrize(
    "answers, code, fragment",
    [
        pytest.param([503] * 10, 503, "could not be delivered", id="alert24-down-is-503"),
        pytest.param([429] * 10, 503, "could not be delivered", id="rate-limited-is-503"),
        pytest.param([400], 422, "Alert24 rejected 1 of 1 events", id="permanent-rejection-is-4xx"),
        pytest.param([401], 422, "Alert24 rejected", id="bad-api-key-is-4xx"),
    ],
)
def test_answer_codes_for_alert24_trouble(post, answers, code, fragment):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for status in answers:
            mock.add(
                responses.POST,
                API_URL,
                status=status,
                json={"error": {"message": "nope"}},
                headers={"X-Request-Id": "a24-9"},
            )
        r = post("firing-single")
    assert r.status_code == code
    assert fragment in r.json["error"]
    assert "ok" not in r.json
    if code == 422:
        assert "a24-9" in r.json["error"]


def test_temporary_trouble_outranks_rejection(post):
    """One event rejected and one failing: Alertmanager should retry soon (503), not wait a group_interval."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.POST,
            API_URL,
            status=400,
            match=[responses.matchers.json_params_matcher({"dedup_key": "913c8c434ab89a6b"}, strict_match=False)],
        )
        mock.add(responses.POST, API_URL, status=503)
        r = post("firing-two-instances")
    assert r.status_code == 503
    assert r.json["rejected"] == 1 and r.json["failed"] == 1


@pytest.mark.parametrize("env_overrides", [{"DRY_RUN": "true", "ALERT24_INTEGRATION_KEY": None}])
def test_dry_run_sends_nothing_and_returns_events(post, alert24, env_overrides):
    r = post("firing-two-instances")
    assert r.status_code == 200 and r.json["dry_run"] is True
    assert [e["dedup_key"] for e in r.json["would_send"]] == ["913c8c434ab89a6b", "55b97254facb078e"]
    assert len(alert24.calls) == 0


def test_secrets_never_reach_responses_or_logs(post, capsys):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.POST, API_URL, status=400, json={"error": {"message": f"bad key {INTEGRATION_KEY} {API_KEY}"}}
        )
        r = post("firing-single")
    logs = capsys.readouterr().out
    text = r.get_data(as_text=True) + logs
    assert r.status_code == 422
    assert "event not delivered" in logs and "[redacted]" in logs, "the log lines were seen"
    for secret in (SECRET, INTEGRATION_KEY, API_KEY):
        assert secret not in text


def test_request_id_is_taken_or_made_and_sent_on(post, alert24):
    r = post("firing-single", headers={"X-Request-Id": "nginx-abc-123"})
    assert r.headers["X-Request-Id"] == "nginx-abc-123"
    assert alert24.calls[0].request.headers["X-Request-Id"] == "nginx-abc-123"
    r = post("firing-single", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["X-Request-Id"] != "bad id\twith spaces" and len(r.headers["X-Request-Id"]) == 32


def test_unexpected_failure_is_json_500_without_traceback(post, capsys):
    class Broken:
        def send(self, *a, **kw):
            raise RuntimeError("boom")

    app = create_app(make_config(), client=Broken(), metrics=Metrics())
    r = app.test_client().post(
        "/alertmanager",
        data=json.dumps(payload("firing-single")),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )
    assert r.status_code == 500
    assert r.json == {"error": f"internal error; see the adapter's log for request id {r.headers['X-Request-Id']}"}
    assert "Traceback" not in r.get_data(as_text=True) and "boom" not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "method, path, code",
    [("GET", "/alertmanager", 405), ("GET", "/nope", 404), ("GET", "/healthz", 200)],
)
def test_other_paths_answer_json(client, method, path, code):
    r = client.open(path, method=method)
    assert r.status_code == code and r.is_json


@pytest.mark.parametrize(
    "peer, forwarded, trusted, expected",
    [
        pytest.param("127.0.0.1", "10.1.2.3", ("127.0.0.1",), "10.1.2.3", id="trusted-proxy"),
        pytest.param("127.0.0.1", "6.6.6.6, 10.1.2.3", ("127.0.0.1",), "10.1.2.3", id="nearest-hop-only"),
        pytest.param("10.9.9.9", "6.6.6.6", ("127.0.0.1",), "10.9.9.9", id="untrusted-peer-ignored"),
        pytest.param("10.9.9.9", "10.1.2.3", ("*",), "10.1.2.3", id="trust-all"),
        pytest.param("127.0.0.1", "", ("127.0.0.1",), "127.0.0.1", id="no-header"),
    ],
)
def test_client_address_for_the_logs(peer, forwarded, trusted, expected):
    from adapter.views import client_address

    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_address(environ, trusted) == expected


def _with_raw(name: str, field: str, literal: str) -> bytes:
    """A stored payload with one top-level field set to a raw JSON literal (json.dumps cannot write these)."""
    body = json.dumps({k: v for k, v in payload(name).items() if k != field})
    return (body[:-1] + f', "{field}": {literal}}}').encode()


@pytest.mark.parametrize(
    "body, code, message",
    [
        pytest.param(
            _with_raw("firing-single", "someFutureField", "1" + "0" * 5000), 200, "", id="5000-digits-ignored"
        ),
        pytest.param(_with_raw("firing-single", "someFutureField", "1e999"), 200, "", id="1e999-ignored"),
        pytest.param(
            _with_raw("firing-single", "truncatedAlerts", "1" + "0" * 400),
            400,
            "'truncatedAlerts' must be a whole number from 0 to 2^64-1",
            id="huge-truncated",
        ),
        pytest.param(
            _with_raw("firing-single", "truncatedAlerts", "18446744073709551616"),
            400,
            "'truncatedAlerts' must be",
            id="truncated-past-64-bits",
        ),
        pytest.param(
            _with_raw("firing-single", "truncatedAlerts", "-1"), 400, "'truncatedAlerts' must be", id="negative"
        ),
        pytest.param(_with_raw("firing-single", "truncatedAlerts", "1e999"), 400, "'truncatedAlerts' must", id="1e999"),
        pytest.param(
            _with_raw("firing-single", "truncatedAlerts", "-0.0"), 400, "'truncatedAlerts' must", id="minus-0.0"
        ),
        pytest.param(_with_raw("firing-single", "x", "NaN"), 400, "NaN is not a JSON number", id="nan"),
        pytest.param(_with_raw("firing-single", "x", "-Infinity"), 400, "is not a JSON number", id="minus-infinity"),
    ],
)
def test_out_of_range_numbers_are_ignored_unread_and_refused_where_read(client, alert24, body, code, message):
    """Never a 500: a number nobody reads is ignored; one that would reach a metric is refused, naming its field."""
    r = client.post(
        "/alertmanager", data=body, headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    )
    assert r.status_code == code
    if code == 400:
        assert message in r.json["error"] and len(alert24.calls) == 0
    else:
        assert r.json["ok"] is True and len(alert24.calls) == 1


def test_largest_truncated_count_is_delivered_and_counted(client, alert24, app):
    body = _with_raw("firing-single", "truncatedAlerts", str(2**64 - 1))
    r = client.post(
        "/alertmanager", data=body, headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    )
    assert r.status_code == 200 and len(alert24.calls) == 1
    registry = app.extensions["alert24_adapter"].metrics.registry
    assert registry.get_sample_value("alert24_adapter_truncated_alerts_total") == float(2**64 - 1)


SURROGATE_PLACES = {
    "label-name": lambda d: d["alerts"][0]["labels"].update({"bad\ud800name": "x"}),
    "label-value": lambda d: d["alerts"][0]["labels"].update(instance="pay-1\udfff"),
    "summary": lambda d: d["alerts"][0]["annotations"].update(summary="disk \ud83d full"),
    "runbook-url": lambda d: d["alerts"][0]["annotations"].update(runbook_url="https://wiki.example/\udc00"),
    "group-key": lambda d: d.update(groupKey='{}:{alertname="\ud800"}'),
    "group-label": lambda d: d["groupLabels"].update(alertname="\udbff"),
}


@pytest.mark.parametrize(
    "env_overrides",
    [
        pytest.param({"LOG_FORMAT": "text"}, id="text-log"),
        pytest.param({"LOG_FORMAT": "json", "DEDUP_BY": "group"}, id="json-log-group"),
        pytest.param({"LOG_FORMAT": "text", "DEDUP_BY": "group"}, id="text-log-group"),
    ],
)
@pytest.mark.parametrize("place", sorted(SURROGATE_PLACES))
def test_lone_surrogates_are_repaired_and_the_page_goes_out(client, alert24, capsys, env_overrides, place):
    """A valid JSON escape of a lone surrogate anywhere: delivered, with U+FFFD, in UTF-8 body, log and answer."""
    data = payload("firing-single")
    del data["alerts"][0]["fingerprint"]
    SURROGATE_PLACES[place](data)
    body = json.dumps(data).encode()  # ensure_ascii writes the lone surrogate as a \uXXXX escape
    assert b"\\ud8" in body or b"\\udb" in body or b"\\udc" in body or b"\\udf" in body
    r = client.post(
        "/alertmanager", data=body, headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    )
    out = capsys.readouterr()
    assert r.status_code == 200, r.get_data(as_text=True)
    [call] = alert24.calls
    sent = call.request.body.decode("utf-8")
    if place not in ("group-key", "group-label") or env_overrides.get("DEDUP_BY") == "group":
        assert "\ufffd" in json.dumps(json.loads(sent), ensure_ascii=False)
    out.out.encode("utf-8")
    assert "Traceback" not in out.out + out.err and "Logging error" not in out.err


GROUP_KEY = '{}:{alertname="DiskFull"}'


def big_group(alerts: int, group_key_first: bool = False) -> bytes:
    """A body of one group of many alerts, its keys in Alertmanager's order (receiver first, groupKey last)."""
    data = payload("firing-two-instances")
    template = data["alerts"][0]
    data["alerts"] = [{**template, "labels": {**template["labels"], "instance": f"db-{i}"}} for i in range(alerts)]
    if group_key_first:
        data = {"groupKey": data.pop("groupKey"), **data}
    return json.dumps(data).encode()


@pytest.mark.parametrize("env_overrides", [{"MAX_BODY_BYTES": "2048"}])
@pytest.mark.parametrize(
    "alerts, group_key_first, skim_limit, expected",
    [
        pytest.param(2000, False, None, {"receiver": "adapter", "group_key": GROUP_KEY}, id="alertmanager-order"),
        pytest.param(10, False, None, {"receiver": "adapter", "group_key": GROUP_KEY}, id="just-over-the-limit"),
        pytest.param(2000, True, None, {"receiver": "adapter", "group_key": GROUP_KEY}, id="group-key-first"),
        pytest.param(2000, False, 100_000, {"receiver": "adapter"}, id="beyond-what-is-skimmed"),
    ],
)
def test_an_oversized_group_is_refused_loudly(
    client, app, alert24, capsys, monkeypatch, env_overrides, alerts, group_key_first, skim_limit, expected
):
    """413, and one error line naming the receiver and group key (read from the body's ends), and a metric."""
    from adapter import views

    if skim_limit:
        monkeypatch.setattr(views, "SKIM_LIMIT", skim_limit)
    body = big_group(alerts, group_key_first)
    capsys.readouterr()
    r = client.post(
        "/alertmanager",
        data=body,
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.headers["Connection"] == "close"
    assert "MAX_BODY_BYTES" in r.json["error"] and "max_alerts" in r.json["error"]
    assert GROUP_KEY not in r.get_data(as_text=True), "the answer never echoes input"
    assert len(alert24.calls) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [line] = [x for x in lines if x["level"] == "error"]
    assert line["logger"] == "alert24_adapter.webhook" and line["outcome"] == "too_large"
    assert {k: line[k] for k in ("receiver", "group_key") if k in line} == expected
    assert line["content_length"] == len(body) and line["max_body_bytes"] == 2048
    metrics = app.extensions["alert24_adapter"].metrics.registry
    assert metrics.get_sample_value("alert24_adapter_oversized_webhooks_total", {"route": "default"}) == 1
    assert metrics.get_sample_value("alert24_adapter_webhooks_total", {"outcome": "too_large", "code": "413"}) == 1


AM_URL = "http://alertmanager.internal:9093"
SQLITE_URL = "sqlite:///var/lib/x/ledger.db"
POSTGRES_URL = "postgresql://user@db.example:5432/x"


def _skipped_pass(text):
    return lambda rt: setattr(rt.reconciler, "last_pass", {"outcome": "skipped", "at": 1.7e9, "reason": text})


def _ledger_failed(text):
    return lambda rt: setattr(rt.forwarder, "ledger_status", {"ok": False, "error": text, "at": 1.7e9})


def _ping_failed(text):
    ping = {"ok": False, "at": 1.7e9, "status": None, "error": text}
    return lambda rt: setattr(rt.forwarder.heartbeat, "last_ping", ping)


@pytest.mark.parametrize(
    "fill, leak",
    [
        pytest.param(_skipped_pass(f"{AM_URL} could not be reached: refused"), AM_URL, id="last-pass-alertmanager-url"),
        pytest.param(_ledger_failed(f"the ledger ({SQLITE_URL}) failed: database is locked"), SQLITE_URL, id="sqlite"),
        pytest.param(_ledger_failed(f"the ledger ({POSTGRES_URL}) failed: timeout"), POSTGRES_URL, id="postgresql"),
        pytest.param(_skipped_pass(f"the ledger ({POSTGRES_URL}) failed"), POSTGRES_URL, id="last-pass-ledger-url"),
        pytest.param(_ping_failed(f"the heartbeat URL {AM_URL}/hb answered 500"), AM_URL, id="heartbeat-error"),
    ],
)
def test_readyz_shows_no_location_or_error_text_to_a_stranger(tmp_path, fill, leak):
    """Free text (a pass's reason, a ledger or ping error) may name a URL, a path or a host: only with a secret."""
    config = make_config(
        ALERTMANAGER_URL="http://alertmanager.internal:9093",
        LEDGER_URL=f"sqlite:///{tmp_path}/ledger.db",
        HEARTBEAT_URL="https://hb.example.net/ping/token-123",
    )
    app = create_app(config, metrics=Metrics())
    fill(app.extensions["alert24_adapter"])
    client = app.test_client()
    stranger = client.get("/readyz").get_data(as_text=True)
    for shown in (leak, "http", "://", "/var/", str(tmp_path), "alertmanager.internal", "hb.example.net"):
        assert shown not in stranger
    ready = json.loads(stranger)
    assert WITHHELD in stranger and ready["status"] == "ready", "what failed still shows, not where"
    assert ready["reconciler"]["leader"] is False and ready["heartbeat"]["min_interval"] == 5.0
    operator = client.get("/readyz", headers={"Authorization": f"Bearer {SECRET}"}).get_data(as_text=True)
    assert leak in operator and "hb.example.net" in operator


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


class Trickle:
    """A WSGI input that gives `piece` bytes a read, each read taking `gap` seconds of its clock."""

    def __init__(self, body: bytes, piece: int, gap: float, clock: Clock):
        self.body, self.piece, self.gap, self.clock = body, piece, gap, clock

    def read(self, size: int = -1) -> bytes:
        self.clock.now += self.gap
        n = self.piece if size < 0 else min(self.piece, size)
        out, self.body = self.body[:n], self.body[n:]
        return out


BODY = json.dumps(payload("firing-single")).encode()


@pytest.mark.parametrize(
    "piece, gap, arrives",
    [
        pytest.param(len(BODY), 0.01, True, id="at-once"),
        pytest.param(len(BODY) // 8 + 1, 0.1, True, id="in-pieces-within-the-timeout"),
        pytest.param(4, 0.3, False, id="trickle-each-piece-in-time-the-whole-too-slow"),
        pytest.param(len(BODY), 1.5, False, id="one-read-past-the-deadline"),
    ],
)
def test_body_read_timeout_bounds_the_whole_body(piece, gap, arrives):
    """BODY_READ_TIMEOUT (1 s here) is for the whole body: each read is given only what is left of it."""
    clock = Clock()
    bounds = []
    stream = Trickle(BODY, piece, gap, clock)
    if arrives:
        assert views.read_within(stream, clock() + 1.0, clock, bounds.append) == BODY
    else:
        with pytest.raises(TimeoutError):
            views.read_within(stream, clock() + 1.0, clock, bounds.append)
    assert bounds == sorted(bounds, reverse=True) and 0 < bounds[-1] <= bounds[0] == 1.0


def test_a_body_cut_off_at_the_deadline_is_a_timeout_not_a_short_body():
    """Under gthread the read side is shut at the deadline: the read ends short, with no error, and that is a 408."""
    clock = Clock()
    deadline = clock() + 1.0

    class Shut(Trickle):
        """A read still waiting at the deadline comes back empty: the read side was shut under it."""

        def read(self, size: int = -1) -> bytes:
            out = super().read(size)
            return b"" if self.clock.now >= deadline else out

    with pytest.raises(TimeoutError):
        views.read_within(Shut(BODY, len(BODY) // 2, 0.6, clock), deadline, clock)


@pytest.mark.parametrize("env_overrides", [{"BODY_READ_TIMEOUT": "1"}])
def test_a_body_trickling_in_past_body_read_timeout_is_408_and_forwards_nothing(
    client, alert24, monkeypatch, capsys, env_overrides
):
    """Each piece comes well within BODY_READ_TIMEOUT, the whole does not: the same JSON 408 as for a pause."""
    clock = Clock()
    monkeypatch.setattr(views, "read_body", functools.partial(views.read_body, clock=clock))
    r = client.post(
        "/alertmanager",
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input": Trickle(BODY, 4, 0.3, clock), "CONTENT_LENGTH": str(len(BODY))},
    )
    assert (r.status_code, r.json, r.headers["Connection"]) == (
        408,
        {"error": "the body did not arrive within 1 s"},
        "close",
    )
    assert len(alert24.calls) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if "alert24_adapter.webhook" in x]
    assert (line["outcome"], line["status"]) == ("body_timeout", 408)
