"""Structured logging to stdout: JSON lines (default) or readable text, each line tagged with its request id."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and the record's extra fields."""

    _encode = json.JSONEncoder(default=str, separators=(",", ":")).encode

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": _timestamp(record.created),
            "level": _LEVELS.get(record.levelno) or record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._encode(line)


class TextFormatter(logging.Formatter):
    """A readable line for local runs: time, level, message, then key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{_timestamp(record.created)} {record.levelname:<7} {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of each record, so redirected output sees every line."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def setup(fmt: str = "json", level: str = "INFO") -> None:
    """Send the adapter's logs to stdout in the chosen format; idempotent."""
    # The logging HOWTO's optimisations: no caller lookup through stack frames, no thread or
    # multiprocessing names; none of them is in our lines.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logger = logging.getLogger("alert24_adapter")
    handler = StdoutHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _fields(record: logging.LogRecord) -> dict:
    out = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
    rid = request_id.get()
    if rid and "request_id" not in out:
        out["request_id"] = rid
    return out


def _timestamp(created: float) -> str:
    return f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}
