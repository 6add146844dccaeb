"""The `alert24-adapter` command: check-config, render, send-test and serve.

Exit codes: 0 success; 1 a problem was found (bad configuration, rejected or failed test notification,
unreadable payload); 2 wrong usage.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from datetime import datetime, timezone
from importlib import resources
from urllib.parse import urlsplit

from . import alertmanager, heartbeat, history, pipeline, rest
from .config import from_env
from .errors import AdapterError, ConfigError, LedgerError
from .outcome import UNCHANGED, Outcome, per_event
from .version import __version__

EXAMPLES = ("firing", "resolved", "multi")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="alert24-adapter",
        description="Forwards Prometheus Alertmanager webhooks to Alert24. Configuration comes from the environment.",
        epilog="Exit codes: 0 success, 1 a problem was found, 2 wrong usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "check-config",
        help="validate the configuration as start-up does and print it with secrets masked",
        description="Validate the environment (and the ADAPTER_CONFIG file) exactly as start-up does. "
        "Prints the effective configuration with secrets masked; exits 1 with one line per problem.",
    )
    p.set_defaults(run=check_config)

    p = commands.add_parser(
        "render",
        help="print the Alert24 events a webhook payload would become, and why",
        description="Read an Alertmanager webhook payload and print the Alert24 events the adapter would send "
        "for it, without sending anything, with the reason for each severity and dedup key.",
    )
    p.add_argument("file", nargs="?", default=None, help="payload file, or - for standard input")
    p.add_argument("--example", choices=EXAMPLES, help="use a payload shipped with the adapter")
    p.add_argument("--route", default="", help="render for this route of the configuration file")
    p.add_argument("--json", action="store_true", help="print one JSON object per event instead of text")
    p.set_defaults(run=render)

    p = commands.add_parser(
        "send-test",
        help="POST a test notification to a running adapter, or a test incident to Alert24, and report the answer",
        description="With --url: POST a realistic test notification to a running adapter with the configured shared "
        "secret (SHARED_SECRET or SHARED_SECRET_FILE) and report what came back. With --direct: create and then "
        "resolve a test incident at Alert24 itself (ALERT24_API_URL, with the configured keys) in a wire format, "
        "and report what the account accepted: which format your Alert24 speaks.",
    )
    p.add_argument("--url", help="the adapter's webhook URL, e.g. http://127.0.0.1:8080/alertmanager")
    p.add_argument("--direct", action="store_true", help="call Alert24 itself instead of a running adapter")
    p.add_argument(
        "--format",
        choices=("events", "rest", "both"),
        help="with --direct: the wire format to try (default: the configured one; both: each, and say which works)",
    )
    p.add_argument("--route", default="", help="with --direct: use this route's keys and format")
    p.add_argument("--resolve", action="store_true", help="send the resolve for the test alert afterwards")
    p.add_argument("--severity", default="critical", help="severity label of the test alert (default: critical)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each answer (default: 15)")
    p.set_defaults(run=send_test)

    p = commands.add_parser(
        "history",
        help="list what the adapter received, decided and sent, newest first",
        description="The delivery history, from the ledger's store: one line per alert of each notification (and "
        "of each reconciler pass), with what was decided for it and what Alert24 answered. Filters combine.",
    )
    _history_filters(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many notifications (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object per notification")
    p.set_defaults(run=show_history)

    p = commands.add_parser(
        "explain",
        help="tell the story of one alert: every notification that carried it, and whether it paged",
        description="Why an alert paged, or did not: every notification that carried it, what was decided each "
        "time and why, what Alert24 answered, what the ledger holds now and what the reconciler would do, then a "
        "one-line verdict. ALERT is a fingerprint, an alertname with labels (DiskFull instance=db-1, or "
        'DiskFull{instance="db-1"}), or a dedup key.',
    )
    p.add_argument("alert", nargs="+", help="the alert: a fingerprint, an alertname with labels, or a dedup key")
    p.add_argument("--since", default="", help="only notifications since then: 30m, 2h, 7d or an RFC 3339 time")
    p.add_argument("--json", action="store_true", help="print the notifications and the verdict as JSON")
    p.set_defaults(run=explain)

    p = commands.add_parser(
        "incidents",
        help="list the open incidents in the ledger",
        description="List the incidents the adapter triggered at Alert24 and has not resolved, from the ledger "
        "(LEDGER_URL, or the default SQLite file under STATE_DIRECTORY).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per incident")
    p.set_defaults(run=incidents)

    p = commands.add_parser(
        "reconcile",
        help="run one reconcile pass, or show with --dry-run what it would resolve and why",
        description="Ask every Alertmanager of ALERTMANAGER_URL for the alerts it holds and judge every open "
        "incident. With --dry-run, print what a pass would resolve and why, and change nothing. Without it, run "
        "a pass if no running adapter holds the reconciler's lock.",
    )
    p.add_argument("--dry-run", action="store_true", help="send nothing and change nothing; print the verdict")
    p.set_defaults(run=reconcile)

    p = commands.add_parser(
        "serve",
        help="run the service under gunicorn with the shipped settings",
        description="Run the service under gunicorn with the adapter's gunicorn settings. "
        "Arguments after -- go to gunicorn, e.g. serve -- --workers 4.",
    )
    p.add_argument("gunicorn_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=serve)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def check_config(args) -> int:
    config = _configuration()
    if config is None:
        return 1
    print(json.dumps(config.masked(), indent=2, default=str))
    from .app import ledger_unwritable

    off = ledger_unwritable(config)
    if off:
        print(f"alert24-adapter: ledger off: {off}", file=sys.stderr)
    elif config.ledger_on:
        from .ledger import open_ledger

        ledger = open_ledger(config.ledger_url, config.ledger_display())
        try:
            ledger.setup()
            open_now = sum(ledger.counts().values())
        except LedgerError as exc:
            print(
                f"alert24-adapter: ledger problem (webhooks would still be delivered): {exc.message}", file=sys.stderr
            )
            return 1
        finally:
            ledger.close()
        print(f"ledger OK: {config.ledger_display()}, {open_now} open incident(s)", file=sys.stderr)
    if config.rest_routes():
        where = ", ".join(config.rest_routes())
        if off or not config.ledger_on:
            print(
                f"alert24-adapter: the rest format ({where}) needs the ledger, which keeps each incident's Alert24 "
                "id; without it every event is looked up at Alert24 before it is sent: set LEDGER_URL, or make "
                "STATE_DIRECTORY writable",
                file=sys.stderr,
            )
            return 1
        print(
            f"format rest on {where}: Alert24's documented API; the ledger keeps each incident's id "
            f"({config.ledger_display()})",
            file=sys.stderr,
        )
        if urlsplit(config.ledger_url or "").scheme == "sqlite":
            # Claims keep one incident per key only among processes that share them.
            print(
                f"warning: format rest on {where} with a SQLite ledger, which this replica alone sees: run "
                "several replicas (or both members of an HA pair on different adapters) only with one shared "
                "PostgreSQL ledger (LEDGER_URL=postgresql://...), or two of them may each create an incident "
                "for one alert",
                file=sys.stderr,
            )
    if config.ledger_on and not off and config.resend_interval > 0:
        print(
            f"resends: a trigger Alert24 accepted less than RESEND_INTERVAL {_duration(config.resend_interval)} ago "
            "is not sent again unless its severity changed",
            file=sys.stderr,
        )
    if config.rate_limit:
        where = "this process alone" if off or not config.ledger_on else config.ledger_display()
        print(
            f"rate budget: at most {config.rate_limit} events a minute per integration key, kept in {where}",
            file=sys.stderr,
        )
    if config.heartbeat_url:
        matchers, url = ",".join(map(str, config.heartbeat_matchers)), heartbeat.display(config.heartbeat_url)
        print(f"heartbeat on: alerts matching {matchers} ping {url}", file=sys.stderr)
    print("configuration OK", file=sys.stderr)
    return 0


def render(args) -> int:
    """What a payload becomes, through a webhook's own stages (adapter.pipeline): planned, then decided against what
    the ledger holds, computed without sending; shown with the requests each event makes."""
    try:
        config = from_env({**os.environ, "DRY_RUN": "true", "ALLOW_UNAUTHENTICATED": "true"})
        data = _payload(args)
        notification = alertmanager.parse(data)
    except (AdapterError, OSError, ValueError) as exc:
        print(f"alert24-adapter: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    rules, matchers, wire = config.rules, config.heartbeat_matchers, config.format
    if args.route:
        routes = {r.name: r for r in config.routes}
        if args.route not in routes:
            print(f"alert24-adapter: no route {args.route!r} in ADAPTER_CONFIG", file=sys.stderr)
            return 1
        rules, wire = routes[args.route].rules, routes[args.route].format
        matchers = matchers if routes[args.route].heartbeat_matchers is None else routes[args.route].heartbeat_matchers
    # Without the ledger, a resolve a drop rule matches is sent, in case its incident is open.
    planned = pipeline.plan(notification, rules, datetime.now(timezone.utc), matchers if config.heartbeat_url else None)
    if config.heartbeat_url:
        _render_heartbeats(planned, heartbeat.display(config.heartbeat_url), args.json)
    known, records = _ledger_state(config, args.route, planned.events, wire)
    now = time.time()
    choices = pipeline.decide(planned.events, known, now, config.resend_interval, records, wire)
    outcomes = pipeline.preview(pipeline.Context(args.route or "default", "", now, wire), planned, choices, known)
    _render_dropped(planned, args.json)
    if wire == "rest":
        _render_rest(config, args.route, planned, choices, records, args.json)
    else:
        shown = config.resend_interval > 0 and config.ledger_on
        _render_events(config, planned, per_event(outcomes) if shown else None, args.json)
    if not planned.events and not planned.has_heartbeats:
        print("no events: the payload has no alerts, or rules dropped them all", file=sys.stderr)
    return 0


def _ledger_state(config, route: str, events, wire: str) -> tuple[dict, dict]:
    """What the ledger holds of the events' keys, read as a webhook reads it (Ledger.state): nothing where no decision
    rests on it (RESEND_INTERVAL=0 in the events format)."""
    if wire != "rest" and config.resend_interval <= 0:
        return {}, {}
    keys = [e.dedup_key for e in events]
    otherwise = "each key is shown as new" if wire == "rest" else "every event would be sent"
    read = _from_ledger(config, events, lambda ledger: ledger.state(route, keys, rest=wire == "rest"), otherwise)
    return read or ({}, {})


def _render_dropped(planned, as_json: bool) -> None:
    for alert, rule in planned.dropped:
        if as_json:
            print(json.dumps({"dropped": alert.fingerprint, "rule": rule, "labels": alert.labels}))
        else:
            print(f"dropped: alert {alert.fingerprint} ({alert.labels.get('alertname', '')}) by rule {rule!r}")


def _render_events(config, planned, outcomes, as_json: bool) -> None:
    """The events format: each event's POST, and the decision taken for it (None: nothing would be skipped)."""
    events, path = planned.events, urlsplit(config.api_url).path
    for i, event in enumerate(events, 1):
        decision = _decision(outcomes[i - 1], config.resend_interval) if outcomes is not None else None
        if as_json:
            shown = {**event.body(), "why": event.why, "request": {"method": "POST", "path": path}}
            print(json.dumps({**shown, **({"decision": decision} if decision else {})}))
            continue
        print(f"event {i} of {len(events)}: {event.action} dedup_key={event.dedup_key} severity={event.severity}")
        for what, why in event.why.items():
            print(f"  {what}: {why}")
        if decision:
            print(f"  decision: {decision['verdict']}: {decision['explanation']}")
        print(f"  request: POST {path} (the body below, with the integration key)")
        print("  body: " + json.dumps(event.body(), indent=2).replace("\n", "\n  "))


def _render_rest(config, route: str, planned, choices, records, as_json: bool) -> None:
    """The requests of the rest format each event becomes now, from what the ledger holds of its key (rest.step)."""
    events = planned.events
    now, at = time.time(), datetime.now(timezone.utc)
    for i, (event, choice) in enumerate(zip(events, choices, strict=True), 1):
        todo = rest.step(records.get(event.dedup_key), event, now, rest.lease(config.time_budget), choice)
        calls = _rest_calls(todo, event, config.api_url, route, at)
        step = {"step": todo.kind, "reason": todo.reason, "requests": [c.describe() for c in calls]}
        if as_json:
            print(json.dumps({"dedup_key": event.dedup_key, "action": event.action, "why": event.why, **step}))
            continue
        print(f"event {i} of {len(events)}: {event.action} dedup_key={event.dedup_key} severity={event.severity}")
        for what, why in event.why.items():
            print(f"  {what}: {why}")
        print(f"  step: {todo.kind}: {todo.reason}" + (" (nothing is sent)" if not calls else ""))
        for call in step["requests"]:
            print(f"  request: {call['method']} {call['path']}")
            if "body" in call:
                print("  body: " + json.dumps(call["body"], indent=2).replace("\n", "\n  "))
        if todo.kind == rest.FIND:
            if event.action == "trigger":
                found = "the one found is adopted" + (", else it is created" if todo.may_create else "")
            else:
                found = "each one found is resolved"
            print(f"  then: the open incidents are read page by page for the tag dedup:{event.dedup_key}; {found}")


def _rest_calls(todo: rest.Step, event, api_url: str, route: str, at: datetime) -> list[rest.Call]:
    """The requests a step sends first: a lookup begins with the first page of open incidents."""
    if todo.kind == rest.CREATE:
        return [rest.create(event, api_url, route)]
    if todo.kind == rest.UPDATE:
        return [rest.update(todo.incident_id, api_url, todo.changes)]
    if todo.kind == rest.RESOLVE:
        return [rest.resolve(todo.incident_id, api_url, at)]
    if todo.kind == rest.CHECK:
        return [rest.fetch(todo.incident_id, api_url)]
    if todo.kind == rest.FIND:
        first = rest.page(api_url, 0)
        if event.action == "resolve" or todo.may_create:
            return [first, rest.preview(event, api_url, route, at)]
        return [first]
    return []


def _from_ledger(config, events, read, otherwise: str):
    """read(ledger) for a render; None without a ledger, or where reading would create its file (a render changes
    nothing), or when it cannot be read (`otherwise` says what that means)."""
    from .ledger import open_ledger

    if not events or not config.ledger_on:
        return None
    path = urlsplit(config.ledger_url).path if config.ledger_url.startswith("sqlite:") else None
    if path is not None and not os.path.exists(path):
        return None
    ledger = open_ledger(config.ledger_url, config.ledger_display())
    try:
        return read(ledger)
    except LedgerError as exc:
        print(f"alert24-adapter: ledger not read, so {otherwise}: {exc.message}", file=sys.stderr)
        return None
    finally:
        ledger.close()


def _decision(o: Outcome, resend_interval: float) -> dict[str, str]:
    """What the ledger made of an event (its outcome, computed without sending): sent, or skipped because Alert24 has
    it, why, and the facts behind it."""
    facts = []
    if o.open_since is not None:
        facts.append(f"open since {_when(o.open_since)}")
    if o.accepted_at is not None:
        facts.append(f"{o.accepted_action} accepted {_ago(o.decided_at - o.accepted_at)} ago")
        facts.append(f"episode {o.accepted_episode or 'not recorded'}")
    if o.in_doubt:
        facts.append("in doubt")
    facts.append(f"RESEND_INTERVAL {_duration(resend_interval)}")
    verdict = "skip" if o.decision == UNCHANGED else "send"
    what = _REASONS.get(o.reason, o.reason)
    return {"verdict": verdict, "reason": o.reason, "explanation": f"{what} ({', '.join(facts)})"}


_REASONS = {
    "new": "no open incident for this key",
    "severity_raised": "the severity rose",
    "severity_changed": "the severity changed",
    "resolve": "a resolve of an incident that may be open",
    "refresh": "the last trigger Alert24 accepted is older than RESEND_INTERVAL",
    "new_episode": "a new firing episode: a resolve this ledger did not see may have closed the incident",
    "in_doubt": "a resolve of it may have reached Alert24 unrecorded",
    "unchanged": "unchanged: Alert24 accepted this trigger, of this episode and severity, within RESEND_INTERVAL",
    "duplicate": "a copy of a resolve of this episode Alert24 accepted within RESEND_INTERVAL",
}


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _duration(seconds: float) -> str:
    """A duration as the settings write it: 1h, 30m, 90s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:g}s"


def _render_heartbeats(found, url: str, as_json: bool) -> None:
    """The heartbeat alerts of a payload: never events; a firing one pings, a resolved one does not."""
    for alert in found.beats + found.stopped:
        firing = alert.status == "firing"
        if as_json:
            print(json.dumps({"heartbeat": alert.fingerprint, "status": alert.status, "ping": firing, "url": url}))
        elif firing:
            print(
                f"heartbeat, not a page: alert {alert.fingerprint} ({alert.labels.get('alertname', '')}) "
                f"pings {url} instead of becoming an event"
            )
        else:
            print(
                f"heartbeat stopped: alert {alert.fingerprint} ({alert.labels.get('alertname', '')}) is resolved: "
                "no ping and no event, and a warning in the log"
            )


def send_test(args) -> int:
    import requests

    if bool(args.url) == bool(args.direct):
        print("alert24-adapter: send-test: give --url (a running adapter) or --direct (Alert24)", file=sys.stderr)
        return 2
    if args.direct:
        return _send_direct(args)
    config = _configuration({**os.environ, "DRY_RUN": "true"})
    if config is None:
        return 1
    firing = _test_notification(args.severity)
    steps = [("firing", firing)]
    if args.resolve:
        steps.append(("resolved", _resolved(firing)))
    headers = {"Content-Type": "application/json"}
    if config.shared_secrets:
        headers["Authorization"] = f"Bearer {config.shared_secrets[0]}"
    ok = True
    for name, body in steps:
        try:
            r = requests.post(args.url, json=body, headers=headers, timeout=args.timeout)
        except requests.RequestException as exc:
            print(f"{name}: could not reach {args.url}: {exc.__class__.__name__}", file=sys.stderr)
            return 1
        print(f"{name}: HTTP {r.status_code} request_id={r.headers.get('X-Request-Id', '-')} {r.text.strip()}")
        ok &= 200 <= r.status_code < 300
    return 0 if ok else 1


def _send_direct(args) -> int:
    """Create and resolve a test incident at Alert24 in each format asked for, and say which the account took."""
    config = _configuration({**os.environ, "ALLOW_UNAUTHENTICATED": "true"})
    if config is None:
        return 1
    if config.dry_run:
        print("alert24-adapter: send-test --direct calls Alert24: unset DRY_RUN", file=sys.stderr)
        return 1
    route = {r.name: r for r in config.routes}.get(args.route) if args.route else None
    if args.route and route is None:
        print(f"alert24-adapter: no route {args.route!r} in ADAPTER_CONFIG", file=sys.stderr)
        return 1
    wire = (route.format if route else config.format) if args.format is None else args.format
    formats = ("events", "rest") if wire == "both" else (wire,)
    key = route.integration_key if route else config.integration_key
    rules = route.rules if route else config.rules
    from .alert24 import Alert24Client
    from .mapping import map_notification

    firing = _test_notification(args.severity)
    events = [map_notification(alertmanager.parse(body), rules)[0] for body in (firing, _resolved(firing))]
    client = Alert24Client.from_config(config)
    took = []
    try:
        for name in formats:
            probe = _probe_events if name == "events" else _probe_rest
            if probe(client, config, args.route, key, events, args.timeout):
                took.append(name)
    finally:
        client.close()
    host = urlsplit(config.api_url).netloc
    print(f"{host} accepted: {', '.join(took) if took else 'neither format'} (tried: {', '.join(formats)})")
    return 0 if took else 1


def _probe_events(client, config, route: str, key: str | None, events, timeout: float) -> bool:
    if not key:
        print("events: not tried: no integration key (ALERT24_INTEGRATION_KEY, or the route's)")
        return False
    for event in events:
        [d] = client.send([event], key, time.monotonic() + timeout)
        print(f"events: {event.action}: {_answered(d.outcome, d.status, d.request_id, d.detail)}")
        if d.outcome != "accepted":
            return False
    return True


def _answered(outcome: str, status: int | None, request_id: str, detail: str) -> str:
    rid = f" request_id={request_id}" if request_id else ""
    return f"{outcome} (HTTP {status or '-'}){rid}" + (f": {detail}" if detail else "")


def _probe_rest(client, config, route: str, key: str | None, events, timeout: float) -> bool:
    trigger, _ = events
    answer = client.call(rest.create(trigger, config.api_url, route), time.monotonic() + timeout, once=True)
    incident_id = rest.created_id(answer.body) if answer.outcome == "accepted" else None
    detail = answer.detail or (f"id {incident_id}" if incident_id else "no incident id in the answer: not the REST API")
    print(f"rest: create: {_answered(answer.outcome, answer.status, answer.request_id, detail)}")
    if incident_id is None:
        return False
    at = datetime.now(timezone.utc)
    answer = client.call(rest.resolve(incident_id, config.api_url, at), time.monotonic() + timeout)
    print(f"rest: resolve {incident_id}: {_answered(answer.outcome, answer.status, answer.request_id, answer.detail)}")
    return answer.outcome == "accepted"


def incidents(args) -> int:
    config, ledger = _ledger()
    if ledger is None:
        return 1
    try:
        entries = ledger.entries()
        ids = {}  # the rest format's: Alert24's id of each incident
        for route in {e.route for e in entries}:
            records = ledger.rest_records(route, [e.dedup_key for e in entries if e.route == route])
            ids.update({(route, key): r.incident_id for key, r in records.items() if r.incident_id})
    except LedgerError as exc:
        print(f"alert24-adapter: {exc.message}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    for e in entries:
        incident_id = ids.get(e.key)
        if args.json:
            shown = {**e.as_dict(), "route": e.route_name}
            print(json.dumps({**shown, "alert24_incident_id": incident_id} if incident_id else shown))
            continue
        absent = f" absent since {_when(e.absent_since)}" if e.absent_since is not None else ""
        at = f" alert24 id {incident_id}" if incident_id else ""
        print(
            f"{e.route_name} {e.dedup_key} {e.alertname or '-'} {e.severity} "
            f"first {_when(e.first_seen)} last {_when(e.last_seen)}{absent}{at}: {e.summary}"
        )
    print(f"{len(entries)} open incident(s) in {config.ledger_display()}", file=sys.stderr)
    return 0


def reconcile(args) -> int:
    from .alert24 import ACCEPTED, Alert24Client
    from .app import State
    from .metrics import process_metrics
    from .reconciler import FAILED, SKIPPED, AlertmanagerAPI, Reconciler

    config, ledger = _ledger()
    if ledger is None:
        return 1
    if not config.reconciler_on:
        print("alert24-adapter: ALERTMANAGER_URL is not set: there is nothing to reconcile against", file=sys.stderr)
        return 1
    client = None
    if not args.dry_run and not config.dry_run:
        client = Alert24Client.from_config(config)
    state = State.of(config)
    reconciler = Reconciler(ledger, process_metrics(), client, lambda: state, AlertmanagerAPI(config))
    try:
        if not args.dry_run and not ledger.try_lead():
            print(
                "alert24-adapter: a running adapter holds the reconciler's lock and runs a pass every "
                "RECONCILE_INTERVAL; use --dry-run to see what it will do",
                file=sys.stderr,
            )
            return 1
        report = reconciler.run_pass(dry_run=args.dry_run)
    except LedgerError as exc:
        print(f"alert24-adapter: {exc.message}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    if report.outcome == SKIPPED:
        print(f"pass skipped, nothing would be resolved: {report.reason}", file=sys.stderr)
        return 1
    verdict = report.verdict
    grace = config.reconcile_grace
    now = datetime.now(timezone.utc).timestamp()
    verb = "would resolve" if args.dry_run else "resolved"
    for e in verdict.resolve:
        since = _when(e.absent_since) if e.absent_since is not None else "now"
        print(
            f"{verb}: {e.route_name} {e.dedup_key} {e.alertname}: no Alertmanager reports its alerts "
            f"since {since}, and the grace of {grace:g} s has passed"
        )
    for e in verdict.waiting:
        print(
            f"waiting: {e.route_name} {e.dedup_key} {e.alertname}: absent since {_when(e.absent_since)}; "
            f"resolved from {_when(e.absent_since + grace)} if it stays absent"
        )
    for e in verdict.newly_absent:
        print(
            f"absent: {e.route_name} {e.dedup_key} {e.alertname}: no Alertmanager reports its alerts; "
            f"resolved from {_when(now + grace)} if it stays absent"
        )
    for e in verdict.back:
        print(f"back: {e.route_name} {e.dedup_key} {e.alertname}: reported again; no longer absent")
    for d in report.deliveries:
        if d.outcome != ACCEPTED:
            print(f"not delivered: {d.event.dedup_key}: {d.detail}")
    absent = len(verdict.resolve) + len(verdict.waiting) + len(verdict.newly_absent)
    print(f"{absent} absent incident(s); {len(verdict.resolve)} {verb}", file=sys.stderr)
    return 0 if report.outcome != FAILED else 1


def _history_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alertname", default="", help="alerts of this alertname")
    p.add_argument("--fingerprint", default="", help="the alert of this fingerprint")
    p.add_argument("--dedup-key", default="", help="alerts of this dedup key")
    p.add_argument("--route", default="", help="alerts of this route (default: plain /alertmanager)")
    p.add_argument("--since", default="", help="since then: 30m, 2h, 7d or an RFC 3339 time (default: all kept)")
    p.add_argument("--outcome", default="", choices=("", *history.OUTCOMES), help="alerts that came to this")


def _history(config, ledger, filters: history.Filters) -> list[history.Entry] | None:
    """The history's entries, or None once it is said why there are none to read."""
    if not config.history_on:
        print("alert24-adapter: no delivery history: HISTORY_RETENTION is 0", file=sys.stderr)
        return None
    try:
        return ledger.history(filters)
    except LedgerError as exc:
        print(f"alert24-adapter: {exc.message}", file=sys.stderr)
        return None


def show_history(args) -> int:
    try:
        since = history.since(args.since, time.time()) if args.since else 0.0
    except ValueError as exc:
        print(f"alert24-adapter: {exc}", file=sys.stderr)
        return 2
    filters = history.Filters(
        args.alertname, args.fingerprint, args.dedup_key, args.route, args.outcome, (), since, max(args.limit, 0)
    )
    config, ledger = _ledger()
    if ledger is None:
        return 1
    try:
        entries = _history(config, ledger, filters)
    finally:
        ledger.close()
    if entries is None:
        return 1
    for e in entries:
        if args.json:
            print(json.dumps(e.to_json()))
            continue
        head = f"{_when(e.at)} {e.kind} {e.request_id} answered {e.status or '-'} ({e.replica})"
        print(head if e.kind == history.WEBHOOK else f"{head}: pass {e.group_key}")
        for alert in e.alerts:
            name = alert.get("alertname") or (alert.get("labels") or {}).get("alertname", "-")
            print(
                f"  {alert.get('route') or e.route} {name} {alert.get('fingerprint', '')} "
                f"{alert.get('dedup_key') or '-'} {alert.get('status', '')}: {alert.get('outcome', '')}: "
                f"{history.decided(alert, e.at)}"
            )
    print(f"{len(entries)} notification(s) in {config.ledger_display()}", file=sys.stderr)
    return 0


def explain(args) -> int:
    spec = " ".join(args.alert)
    filters = history.alert_filters(spec)
    try:
        since = history.since(args.since, time.time()) if args.since else 0.0
    except ValueError as exc:
        print(f"alert24-adapter: {exc}", file=sys.stderr)
        return 2
    config, ledger = _ledger()
    if ledger is None:
        return 1
    try:
        entries = _history(config, ledger, dataclasses.replace(filters, since=since))
        if entries is None:
            return 1
        now = _now_of(config, ledger, entries)
    finally:
        ledger.close()
    at = time.time()
    lines = history.story(entries, now, at)
    if args.json:
        print(json.dumps({"alert": spec, "notifications": [e.to_json() for e in entries], "verdict": lines[-1]}))
    else:
        print("\n".join(lines))
    return 0 if entries else 1


def _now_of(config, ledger, entries: list[history.Entry]) -> history.Now:
    """What the ledger holds now for the alert's latest dedup key, and what the reconciler would do with it."""
    latest = next((a for e in entries for a in e.alerts if a.get("dedup_key")), None)
    if latest is None:
        return history.Now()
    key, name = latest["dedup_key"], latest.get("route") or "default"
    route = "" if name == "default" else name
    try:
        known = ledger.known(route, [key]).get(key)
    except LedgerError as exc:
        return history.Now(key, reconciler=f"The ledger cannot be read now: {exc.message}")
    grace = _duration(config.reconcile_grace)
    if not config.reconciler_on:
        would = "The reconciler is off (no ALERTMANAGER_URL): an incident whose resolve never comes stays open."
    elif known is None or not known.open:
        would = "The reconciler has nothing to resolve for it."
    elif known.absent:
        would = f"The reconciler counts it absent from every Alertmanager: it resolves it once {grace} have passed."
    else:
        would = (
            f"The reconciler leaves it open while an Alertmanager reports it, and resolves it {grace} after the last "
            "one stops."
        )
    if known is None:
        return history.Now(key, reconciler=would)
    return history.Now(
        key,
        known.open_since,
        None,
        known.accepted_at,
        known.action,
        known.doubt,
        would,
    )


def _ledger():
    """The configuration and its ledger, or (config, None) after saying why there is none."""
    from .ledger import open_ledger

    config = _configuration()
    if config is None:
        return None, None
    if not config.ledger_on:
        print("alert24-adapter: no ledger: set ALERTMANAGER_URL (reconciler) or LEDGER_URL", file=sys.stderr)
        return config, None
    return config, open_ledger(config.ledger_url, config.ledger_display())


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def serve(args) -> int:
    extra = [a for a in args.gunicorn_args if a != "--"]
    argv = ["gunicorn", "--config", "python:adapter.gunicorn_conf", *extra, "adapter.wsgi:app"]
    sys.stdout.flush()
    os.execvp(sys.executable, [sys.executable, "-m", *argv])  # noqa: S606
    return 0  # pragma: no cover


def _configuration(environ=None):
    """The Config from the environment (adapter.config.from_env), or None once its problems are printed, one
    line each, as start-up prints them."""
    try:
        return from_env(environ)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"alert24-adapter: configuration error: {line}", file=sys.stderr)
        return None


def example(name: str) -> dict:
    """A webhook payload shipped with the package."""
    return json.loads(resources.files("adapter").joinpath(f"examples/{name}.json").read_text("utf-8"))


def _payload(args) -> dict:
    if args.example:
        return example(args.example)
    if args.file in (None, "-"):
        if args.file is None and sys.stdin.isatty():
            raise ValueError("give a payload file, - for standard input, or --example NAME")
        return alertmanager.loads(sys.stdin.read())
    with open(args.file, encoding="utf-8") as fh:
        return alertmanager.loads(fh.read())


def _test_notification(severity: str) -> dict:
    body = copy.deepcopy(example("firing"))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    labels = {"alertname": "Alert24AdapterTest", "severity": severity, "service": "alert24-adapter", "job": "send-test"}
    # A label of its own for each run: a new alert, which the adapter sends even right after another test.
    labels["test_run"] = now
    alert = body["alerts"][0]
    alert.update(labels=labels, startsAt=now, fingerprint=alertmanager.fingerprint(labels), generatorURL="")
    alert["annotations"] = {"summary": "Test notification from alert24-adapter send-test"}
    body.update(
        receiver="alert24-adapter-send-test",
        groupKey='{}:{alertname="Alert24AdapterTest"}',
        groupLabels={"alertname": "Alert24AdapterTest"},
        commonLabels=labels,
        commonAnnotations=alert["annotations"],
    )
    return body


def _resolved(firing: dict) -> dict:
    body = copy.deepcopy(firing)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body["status"] = "resolved"
    for alert in body["alerts"]:
        alert.update(status="resolved", endsAt=now)
    return body


if __name__ == "__main__":
    sys.exit(main())
