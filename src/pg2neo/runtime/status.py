"""`pg2neo status`: queue depth, lag, throughput, dead letters and the last batch, from PostgreSQL alone."""

from __future__ import annotations

from typing import Any

import psycopg


def status_report(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    queue = conn.execute(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(enqueued_at)), min(seq), max(seq) "
        "FROM pg2neo.changes"
    ).fetchone()
    assert queue is not None
    minute = conn.execute(
        "SELECT coalesce(sum(events) FILTER (WHERE kind = 'changes'), 0), count(*) FROM pg2neo.audit "
        "WHERE finished_at > clock_timestamp() - interval '60 seconds'"
    ).fetchone()
    assert minute is not None
    dead = conn.execute("SELECT count(*) FROM pg2neo.dead_letters").fetchone()
    last = conn.execute(
        "SELECT kind, finished_at, events, counts, duration_ms, last_seq FROM pg2neo.audit ORDER BY id DESC LIMIT 1"
    ).fetchone()
    services = conn.execute(
        "SELECT name, value, extract(epoch FROM clock_timestamp()) - (value->>'heartbeat')::float8 "
        "FROM pg2neo.state WHERE name LIKE 'service:%%' ORDER BY name"
    ).fetchall()
    drift = conn.execute(
        "SELECT value, extract(epoch FROM clock_timestamp()) - (value->>'at')::float8 FROM pg2neo.state "
        "WHERE name = 'drift'"
    ).fetchone()
    snapshot = conn.execute("SELECT tbl, rows_done, done FROM pg2neo.snapshot_progress ORDER BY tbl").fetchall()
    return {
        "queue_depth": int(queue[0]),
        "lag_seconds": round(float(queue[1] or 0.0), 3),
        "oldest_seq": queue[2],
        "newest_seq": queue[3],
        "applied_last_minute": int(minute[0]),
        "throughput_per_second": round(int(minute[0]) / 60.0, 1),
        "batches_last_minute": int(minute[1]),
        "dead_letters": int(dead[0]) if dead else 0,
        "last_batch": None
        if last is None
        else {
            "kind": last[0],
            "finished_at": last[1].isoformat(),
            "events": last[2],
            "counts": last[3],
            "duration_ms": round(float(last[4]), 1),
            "last_seq": last[5],
        },
        "drift": None
        if drift is None
        else {
            "last_check": drift[0]["mode"],
            "seconds_ago": round(float(drift[1]), 1),
            "total": drift[0]["drift"],
            **drift[0]["totals"],
        },
        "services": [_service(name, value, float(age)) for name, value, age in services],
        "snapshot": {row[0]: {"rows": int(row[1]), "done": bool(row[2])} for row in snapshot},
    }


def _service(name: str, value: dict[str, Any], age: float) -> dict[str, Any]:
    from pg2neo.runtime.service import Heartbeat

    stale = age > Heartbeat.STALE_AFTER
    return {
        "name": name.removeprefix("service:"),
        "state": "not responding" if stale else value.get("state"),
        "detail": value.get("detail") or "",
        "heartbeat_seconds_ago": round(age, 1),
        "since": value.get("since"),
    }
