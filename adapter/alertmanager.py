"""The Alertmanager webhook payload (version 4): validation into typed objects, and fingerprints."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from typing import Any

from .errors import PayloadError

STATUSES = ("firing", "resolved")
ZERO_TIME = "0001-01-01T00:00:00Z"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF
# A key of a body too large to read, and its value, as glimpse() finds them: bounded, and linear to search.
_GLIMPSE = re.compile(rb'"(receiver|groupKey)"\s*:\s*("(?:[^"\\]|\\.){0,4096}")')
GLIMPSE_CHARS = 512
# truncatedAlerts is a uint64 in Alertmanager. Integer literals longer than any 64-bit number are decoded
# as floats: Python's int() is quadratic in the digits and stops at 4300 of them.
_INT_MAX = 2**64 - 1
_INT_DIGITS = 20


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One alert of a notification."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    generator_url: str
    fingerprint: str


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    """One webhook call: a group of alerts and the group's context."""

    receiver: str
    status: str
    group_key: str
    group_labels: dict[str, str]
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: FNV-1a 64 over sorted names and values, 0xff after each.

    Labels with an empty value are left out, as Alertmanager drops them before it computes its own.
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        value = labels[name]
        if value == "":
            continue
        for part in (name, value):
            for byte in part.encode("utf-8", "surrogatepass"):
                h = ((h ^ byte) * _FNV_PRIME) & _MASK64
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK64
    return f"{h:016x}"


def loads(text: str | bytes) -> Any:
    """Decode a webhook body as JSON, at a cost linear in its size whatever its numbers.

    An integer literal longer than 20 digits becomes a float (possibly infinite): ignored where the field
    is unknown, refused by the field's own check where it is read. NaN and Infinity, which Python's json
    would accept, are refused with a PayloadError: they are not JSON. Text that is not JSON at all raises
    json.JSONDecodeError, UnicodeDecodeError or RecursionError.
    """
    return json.loads(text, parse_int=_int_or_float, parse_constant=_no_constant)


def _int_or_float(literal: str) -> int | float:
    return int(literal) if len(literal) <= _INT_DIGITS else float(literal)


def _no_constant(name: str) -> float:
    raise PayloadError(f"the body is not valid JSON: {name} is not a JSON number")


def text(value: str) -> str:
    """The string as valid Unicode: lone UTF-16 surrogates become U+FFFD.

    JSON may escape a lone surrogate ("\\ud800"), which decodes to a str that no UTF-8 encoder takes.
    Replacing it, as Alertmanager's own Go encoder does with invalid UTF-8, keeps the page going out and
    makes every string that leaves the adapter (Alert24 body, logs, links, CLI) encodable.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def glimpse(head: bytes, tail: bytes) -> dict[str, str]:
    """The receiver and group key of a body too large to read, from its first and last bytes (either may be
    missing from the result).

    Alertmanager writes `receiver` first and `groupKey` last, so the receiver is the first found in the head
    and the group key the last found in the tail (each falls back on the other end). JSON escapes every quote
    inside a string, so what matches is a key, never text inside a value.
    """
    heads: dict[bytes, bytes] = {}
    tails: dict[bytes, bytes] = {}
    for m in _GLIMPSE.finditer(head):
        heads.setdefault(m.group(1), m.group(2))
    for m in _GLIMPSE.finditer(tail):
        tails[m.group(1)] = m.group(2)
    found = {}
    for name, literal in (
        ("receiver", heads.get(b"receiver") or tails.get(b"receiver")),
        ("group_key", tails.get(b"groupKey") or heads.get(b"groupKey")),
    ):
        try:
            value = json.loads(literal) if literal else None
        except ValueError:
            continue
        if isinstance(value, str):
            found[name] = text(value[:GLIMPSE_CHARS])
    return found


def parse(data: Any) -> Notification:
    """Validate a decoded webhook body completely and return it typed; raise PayloadError on the first fault."""
    if not isinstance(data, dict):
        raise PayloadError("the payload must be a JSON object")
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("the payload has no 'alerts' list")
    alerts = tuple(_alert(raw, i) for i, raw in enumerate(raw_alerts))

    status = data.get("status")
    if status is None:
        status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    elif status not in STATUSES:
        raise PayloadError("'status' must be 'firing' or 'resolved'")
    truncated = data.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if isinstance(truncated, bool) or not isinstance(truncated, int) or not 0 <= truncated <= _INT_MAX:
        raise PayloadError("'truncatedAlerts' must be a whole number from 0 to 2^64-1")

    # Validated though unused, so that a malformed sender is told rather than half-understood.
    _string(data, "version", "version")
    _string_map(data.get("commonLabels"), "commonLabels")
    _string_map(data.get("commonAnnotations"), "commonAnnotations")
    return Notification(
        receiver=_string(data, "receiver", "receiver"),
        status=status,
        group_key=_string(data, "groupKey", "groupKey"),
        group_labels=_string_map(data.get("groupLabels"), "groupLabels"),
        external_url=_string(data, "externalURL", "externalURL"),
        truncated_alerts=truncated,
        alerts=alerts,
    )


def _alert(raw: Any, i: int) -> Alert:
    where = f"alerts[{i}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be a JSON object")
    labels = raw.get("labels")
    if not isinstance(labels, dict):
        raise PayloadError(f"{where} has no 'labels' object")
    labels = _string_map(labels, f"{where}.labels")
    status = raw.get("status")
    if status not in STATUSES:
        raise PayloadError(f"{where}.status must be 'firing' or 'resolved'")
    fp = raw.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise PayloadError(f"{where}.fingerprint must be a string")
    if not fp or not _FINGERPRINT.fullmatch(fp):
        fp = fingerprint(labels)
    return Alert(
        status=status,
        labels=labels,
        annotations=_string_map(raw.get("annotations"), f"{where}.annotations"),
        starts_at=_timestamp(raw, "startsAt", where),
        ends_at=_timestamp(raw, "endsAt", where),
        generator_url=_string(raw, "generatorURL", f"{where}.generatorURL"),
        fingerprint=fp,
    )


def _string(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a string")
    return text(value)


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be a JSON object")
    plain = True
    for k, v in value.items():
        if not isinstance(v, str) or not isinstance(k, str):
            raise PayloadError(f"{where} must map names to strings")
        plain = plain and k.isascii() and v.isascii()
    # Copied only when something may need repair: most label sets are plain ASCII.
    return value if plain else {text(k): text(v) for k, v in value.items()}


def _timestamp(obj: dict, key: str, where: str) -> str | None:
    """A valid RFC 3339 timestamp, or None for unset and for values that are not one.

    A bad timestamp must not cost the page, so it is left out rather than refused.
    """
    value = _string(obj, key, f"{where}.{key}")
    if not value or value == ZERO_TIME or not _RFC3339.fullmatch(value):
        return None
    try:
        # The regular expression fixed every position; the constructor checks the ranges (month 13,
        # February 30, second 60), at a fraction of strptime's cost.
        datetime(
            int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]), int(value[17:19])
        )
    except ValueError:
        return None
    return value
