"""Structured log events: `event key=value ...`, configured by the CLI only; secrets never reach the output.

Every line this module formats, and every error line the CLI prints, goes through `redact`: the password of any
connection string (URI or `key=value` form) and every secret registered with `add_secret` (the configured
passwords, found once when the settings are loaded) is replaced by `***`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import urllib.parse
from typing import Any

_LOGGER = logging.getLogger("pg2neo")

MASK = "***"
# Shorter values would mask ordinary text; the structural patterns below still hide them inside a DSN.
MIN_SECRET_LENGTH = 3

_DSN_SECRETS = (
    # key=value connection strings: password=x, password = 'a b\'c'
    re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE),
    # URIs: scheme://user:password@host. A malformed password may hold spaces or a raw '@': the match runs to the
    # last '@' before a path, quote or line end, so too much is masked rather than too little. The configured
    # passwords are also registered secrets, masked before this runs.
    re.compile(r"([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)([^/?#\n\"']*)(@)", re.IGNORECASE),
)
_KNOWN_SECRETS: set[str] = set()


def add_secret(value: str | None) -> None:
    """Mask this value (and its percent-encoded and -decoded forms) wherever it appears in output from now on."""
    if not value:
        return
    # As typed, percent-encoded, percent-decoded, and escaped inside a JSON string (`--log-json`).
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.unquote(value), json.dumps(value)[1:-1]}
    _KNOWN_SECRETS.update(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """`text` without passwords: the secret parts of connection strings and every registered secret."""
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _DSN_SECRETS:
        text = pattern.sub(lambda m: m.group(1) + MASK + (m.group(3) if m.lastindex == 3 else ""), text)
    return text


def get_logger(name: str) -> logging.Logger:
    return _LOGGER.getChild(name)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; fields travel in `extra` so a JSON formatter can keep them apart."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"pg2neo_fields": fields})


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "pg2neo_fields", {})
        parts = [self.formatTime(record, "%H:%M:%S"), record.levelname.lower(), record.getMessage()]
        parts += [f"{key}={value}" for key, value in fields.items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "pg2neo_fields", {})
        doc = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc, default=str))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record (test runners swap and close it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "info", json_output: bool = False) -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if json_output else KeyValueFormatter())
    _LOGGER.handlers[:] = [handler]
    _LOGGER.setLevel(level.upper())
    _LOGGER.propagate = False


def json_output() -> bool:
    """True when the CLI asked for JSON lines (`--log-json`): its error line is then a JSON event too."""
    return any(isinstance(handler.formatter, JsonFormatter) for handler in _LOGGER.handlers)


def debug_enabled() -> bool:
    return _LOGGER.isEnabledFor(logging.DEBUG)
