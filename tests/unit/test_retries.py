"""The retry loop's heartbeat: a service waiting out an outage keeps saying so, then says it runs again."""

from __future__ import annotations

from typing import Any

import psycopg

from pg2neo.runtime.service import Heartbeat, Stopper, with_retries


class RecordedHeartbeat(Heartbeat):
    EVERY = 0.0  # every beat is due: the test counts beats, not seconds

    def __init__(self) -> None:
        super().__init__("dbname=unused")
        self.written: list[str] = []

    def _write(self, value: dict[str, Any]) -> None:
        self.written.append(value["state"])


class FakeEngine:
    attempts = 1

    def close(self) -> None:
        pass


def test_a_waiting_service_keeps_beating_then_reports_running() -> None:
    heartbeat = RecordedHeartbeat()
    failures = 4

    def step() -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise psycopg.OperationalError("connection refused")

    stopper = Stopper()
    stopper.sleep = lambda seconds: None  # type: ignore[method-assign]
    with_retries(FakeEngine(), stopper, step, heartbeat)  # type: ignore[arg-type]
    # one forced beat when the state turns to waiting, then a beat on every further failed attempt
    assert heartbeat.written.count("waiting") >= 4
    assert heartbeat.written[-1] == "running"
    assert heartbeat.state == "running"


def test_a_stale_heartbeat_is_not_rewritten_before_it_is_due() -> None:
    heartbeat = RecordedHeartbeat()
    heartbeat.EVERY = 3600.0
    heartbeat.set("waiting", "down")
    heartbeat.beat()
    heartbeat.beat()
    assert heartbeat.written == ["waiting"]
