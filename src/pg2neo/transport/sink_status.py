"""What the Kafka sink has done and has left to do: per partition, the offset Neo4j holds (the sink's own record of
progress) against the partition's end; the group's workers; the end-to-end lag of the last events applied; the
relationships waiting for an end node; and the dead letters (read back with their reasons)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from neo4j import Driver

from pg2neo.apply.cypher import PENDING_COUNT, SINK_CHECKPOINTS


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def sink_status(
    bootstrap_servers: str, group: str, dead_letter_topic: str, driver: Driver, database: str = "neo4j"
) -> dict[str, Any]:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    prefix = f"kafka:{group}:"
    with driver.session(database=database) as session:
        checkpoints = list(session.run(SINK_CHECKPOINTS, prefix=prefix))
        pending_record = session.run(PENDING_COUNT).single()
    pending = 0 if pending_record is None else int(pending_record["c"])
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    workers = 0
    assigned: set[tuple[str, int]] = set()
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        workers = len(described.members)
        for member in described.members:
            assignment = getattr(member, "assignment", None)
            for tp in getattr(assignment, "topic_partitions", None) or []:
                assigned.add((tp.topic, tp.partition))
    except Exception:  # a group that has not started yet
        workers = 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap_servers, "group.id": f"pg2neo-status-{uuid.uuid4().hex}", "log_level": 0}
    )
    partitions: list[dict[str, Any]] = []
    lags: list[float] = []
    try:
        stored: dict[tuple[str, int], Any] = {}
        for checkpoint in checkpoints:
            name, _, number = str(checkpoint["name"])[len(prefix) :].rpartition(":")
            if number.isdigit():
                stored[(name, int(number))] = checkpoint
        for topic, partition in sorted(set(stored) | assigned):
            low, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            record = stored.get((topic, partition))
            applied = low if record is None else int(record["next"])  # nothing applied yet: from the start
            partitions.append(
                {"topic": topic, "partition": partition, "applied": applied, "end": end, "lag": max(0, end - applied)}
            )
            if record is not None and record["at"] is not None and record["source_ms"] is not None:
                at = record["at"]
                committed = at.to_native() if hasattr(at, "to_native") else at
                source = dt.datetime.fromtimestamp(record["source_ms"] / 1000, dt.UTC)
                lags.append((committed - source).total_seconds())
        dead = 0
        try:
            metadata = consumer.list_topics(dead_letter_topic, timeout=10).topics.get(dead_letter_topic)
            for number in [] if metadata is None or metadata.error is not None else list(metadata.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(dead_letter_topic, number), timeout=10)
                dead += max(0, high - low)
        except Exception:  # no dead-letter topic yet: no dead letters
            dead = 0
    finally:
        consumer.close()
    partitions.sort(key=lambda p: (p["topic"], p["partition"]))
    return {
        "group": group,
        "workers": workers,
        "partitions": partitions,
        "lag": sum(p["lag"] for p in partitions),
        "end_to_end_seconds": round(max(lags), 3) if lags else None,
        "pending_relationships": pending,
        "dead_letters": dead,
    }


def dead_letters(bootstrap_servers: str, topic: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every message on the dead-letter topic: reason, source topic/partition/offset, and the event (truncated)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"pg2neo-dlq-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    out: list[dict[str, Any]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            raw_headers: Any = message.headers() or []
            headers = {str(k): _text(v) for k, v in raw_headers}
            out.append(
                {
                    "reason": headers.get("pg2neo.reason"),
                    "topic": headers.get("pg2neo.topic"),
                    "partition": headers.get("pg2neo.partition"),
                    "offset": headers.get("pg2neo.offset"),
                    "value": (message.value() or b"").decode(errors="replace")[:2000],
                }
            )
            deadline = time.monotonic() + 1.0
    finally:
        consumer.close()
    return out
