"""Urgency rules: Alertmanager-style label matchers and time windows that decide an alert's severity.

Pure: parsing works on already-loaded data, evaluation takes the time as an argument.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SEVERITIES = ("critical", "high", "warning", "medium", "low", "maintenance")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)|24:00")


class PolicyError(ValueError):
    """A rule that cannot be used; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Matcher:
    """One label matcher in Alertmanager's syntax: name, operator (= != =~ !~) and value."""

    name: str
    op: str
    value: str
    regex: re.Pattern | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        if not isinstance(text, str):
            raise PolicyError("a matcher must be a string such as 'service=\"payments\"'")
        m = _MATCHER.fullmatch(text)
        if not m:
            raise PolicyError(f"{text!r} is not a matcher such as 'service=\"payments\"'")
        name, op, raw = m.groups()
        value = _unquote(raw)
        regex = None
        if op in ("=~", "!~"):
            try:
                # Alertmanager anchors regular expressions at both ends.
                regex = re.compile(f"(?:{value})", re.DOTALL)
            except re.error as exc:
                raise PolicyError(f"{text!r}: bad regular expression: {exc}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels match; a missing label matches as the empty string, as in Alertmanager."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Matchers from one string as Alertmanager and amtool write them: `a="x",b=~"y|z"`, braces optional.

    Commas inside quoted values do not split. Raises PolicyError naming the first bad matcher.
    """
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    parts, current, quote, escaped = [], [], "", False
    for char in text:
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote and char == quote:
            quote = ""
        elif not quote and char in "\"'":
            quote = char
        elif not quote and char == ",":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    if quote:
        raise PolicyError(f"{text!r}: a quoted value is not closed")
    return tuple(Matcher.parse(part) for part in parts if part.strip())


@dataclasses.dataclass(frozen=True)
class TimeWindow:
    """Times of day and weekdays in a time zone, in the style of Alertmanager's time_intervals.

    Every given part must match; within a part, any range. A range of times runs from start
    (inclusive) to end (exclusive); one whose end is before its start runs across midnight.
    """

    times: tuple[tuple[int, int], ...] = ()
    weekdays: frozenset[int] = frozenset()
    location: str = "UTC"

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.location))
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        if not self.times:
            return True
        minute = local.hour * 60 + local.minute
        return any(
            start <= minute < end if start < end else minute >= start or minute < end for start, end in self.times
        )

    def describe(self) -> str:
        parts = []
        if self.weekdays:
            parts.append("/".join(WEEKDAYS[d][:3] for d in sorted(self.weekdays)))
        for start, end in self.times:
            parts.append(f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}")
        return " ".join(parts or ["always"]) + f" {self.location}"


@dataclasses.dataclass(frozen=True)
class Rule:
    """An urgency rule: when its matchers (and any of its windows) match, it sets, caps or drops."""

    name: str
    matchers: tuple[Matcher, ...] = ()
    windows: tuple[TimeWindow, ...] = ()
    severity: str | None = None
    max_severity: str | None = None
    drop: bool = False

    def applies(self, labels: Mapping[str, str], now: datetime) -> bool:
        if not all(m.matches(labels) for m in self.matchers):
            return False
        return not self.windows or any(w.contains(now) for w in self.windows)

    def describe(self) -> str:
        what = "drop" if self.drop else f"severity {self.severity}" if self.severity else f"at most {self.max_severity}"
        when = f" during {' or '.join(w.describe() for w in self.windows)}" if self.windows else ""
        return f"rule {self.name!r} ({', '.join(map(str, self.matchers)) or 'any alert'}{when}): {what}"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the rules decided for one alert."""

    severity: str
    why: str
    dropped_by: str | None = None


def decide(labels: Mapping[str, str], mapped: str, mapped_why: str, rules: tuple[Rule, ...], now: datetime) -> Decision:
    """Apply the first rule that matches to the severity from the plain map; fall through when none does."""
    for rule in rules:
        if not rule.applies(labels, now):
            continue
        if rule.drop:
            return Decision(mapped, rule.describe(), dropped_by=rule.name)
        if rule.severity:
            return Decision(rule.severity, rule.describe())
        capped = max(mapped, rule.max_severity, key=SEVERITIES.index)
        return Decision(capped, f"{rule.describe()}; {mapped_why}")
    return Decision(mapped, mapped_why)


RULE_KEYS = {"name", "matchers", "time_intervals", "severity", "max_severity", "action"}
WINDOW_KEYS = {"times", "weekdays", "location"}


def parse_rules(data: Any, where: str, problems: list[str]) -> tuple[Rule, ...]:
    """Rules from loaded YAML; every problem is appended to problems as one line naming its path."""
    rules = []
    for path, item in _mappings(data, where, "rule", problems):
        before = len(problems)
        for key in sorted(set(item) - RULE_KEYS):
            problems.append(f"{path}: unknown key {key!r}")
        name = str(item.get("name") or f"rule-{len(rules) + 1}")
        matchers = []
        raw_matchers = item.get("matchers") or []
        if not isinstance(raw_matchers, list):
            problems.append(f"{path}.matchers: must be a list of matchers")
            raw_matchers = []
        for j, text in enumerate(raw_matchers):
            try:
                matchers.append(Matcher.parse(text))
            except PolicyError as exc:
                problems.append(f"{path}.matchers[{j}]: {exc}")
        windows = _windows(item.get("time_intervals"), f"{path}.time_intervals", problems)
        action = item.get("action")
        severity, cap = item.get("severity"), item.get("max_severity")
        chosen = [k for k, v in (("severity", severity), ("max_severity", cap), ("action", action)) if v is not None]
        if len(chosen) != 1:
            problems.append(f"{path}: give exactly one of severity, max_severity or action: drop")
        elif action is not None and action != "drop":
            problems.append(f"{path}.action: the only action is 'drop'")
        for key, value in (("severity", severity), ("max_severity", cap)):
            if value is not None and value not in SEVERITIES:
                problems.append(f"{path}.{key}: {value!r} is not one of {', '.join(SEVERITIES)}")
        if len(problems) == before:
            rules.append(Rule(name, tuple(matchers), windows, severity, cap, action == "drop"))
    return tuple(rules)


def _windows(data: Any, where: str, problems: list[str]) -> tuple[TimeWindow, ...]:
    if data is not None and not data:
        problems.append(f"{where}: must be a non-empty list of time windows")
    windows = []
    for path, item in _mappings(data, where, "time window", problems):
        for key in sorted(set(item) - WINDOW_KEYS):
            problems.append(f"{path}: unknown key {key!r}")
        location = item.get("location", "UTC")
        try:
            ZoneInfo(str(location))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{path}.location: {location!r} is not an IANA time zone")
            location = "UTC"
        times = []
        for j, span in enumerate(item.get("times") or []):
            start = _clock(span.get("start_time") if isinstance(span, dict) else None)
            end = _clock(span.get("end_time") if isinstance(span, dict) else None)
            if start is None or end is None or start == end:
                problems.append(f"{path}.times[{j}]: needs start_time and end_time as HH:MM, and they must differ")
                continue
            times.append((start, end))
        weekdays = set()
        for j, spec in enumerate(item.get("weekdays") or []):
            days = _weekdays(spec)
            if days is None:
                problems.append(f"{path}.weekdays[{j}]: {spec!r} is not a weekday or a range such as monday:friday")
            else:
                weekdays |= days
        windows.append(TimeWindow(tuple(times), frozenset(weekdays), str(location)))
    return tuple(windows)


def _mappings(data: Any, where: str, what: str, problems: list[str]):
    """(path, item) for each mapping of a YAML list; a problem for anything else."""
    if data is None:
        return
    if not isinstance(data, list):
        problems.append(f"{where}: must be a list of {what}s")
        return
    for i, item in enumerate(data):
        if isinstance(item, dict):
            yield f"{where}[{i}]", item
        else:
            problems.append(f"{where}[{i}]: a {what} must be a mapping")


def _clock(text: Any) -> int | None:
    if not isinstance(text, str) or not _CLOCK.fullmatch(text.strip()):
        return None
    hours, minutes = text.strip().split(":")
    return int(hours) * 60 + int(minutes)


def _weekdays(spec: Any) -> set[int] | None:
    if not isinstance(spec, str):
        return None
    first, _, last = spec.strip().lower().partition(":")
    last = last or first
    if first not in WEEKDAYS or last not in WEEKDAYS:
        return None
    a, b = WEEKDAYS.index(first), WEEKDAYS.index(last)
    return set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(0, b + 1))


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        body = raw[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), body)
    return raw
