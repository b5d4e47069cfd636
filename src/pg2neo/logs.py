"""Structured log events: `event key=value ...`, configured by the CLI only."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_LOGGER = logging.getLogger("pg2neo")


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
        return text


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
        return json.dumps(doc, default=str)


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
