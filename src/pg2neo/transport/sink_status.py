"""What the Kafka sink has done and has left to do: per partition, the offset Neo4j holds (the sink's own record of
progress) against the partition's end; the group's workers; the end-to-end lag of the last events applied; the
relationships waiting for an end node; and the dead letters (read back with their reasons)."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from neo4j import Driver

from pg2neo.apply.cypher import PENDING_COUNT, SINK_CHECKPOINTS
from pg2neo.errors import ConfigError


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
            place = checkpoint_place(str(checkpoint["name"]))  # not another group whose name starts with this one's
            if place is not None and place.group == group and place.topic is not None and place.partition is not None:
                stored[(place.topic, place.partition)] = checkpoint
        for topic, partition in sorted(set(stored) | assigned):
            low, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            record = stored.get((topic, partition))
            applied = low if record is None else int(record["next"])  # nothing applied yet: from the start
            partitions.append(
                {"topic": topic, "partition": partition, "applied": applied, "end": end, "lag": max(0, end - applied)}
            )
            seconds = None if record is None else _end_to_end_seconds(record)
            if seconds is not None:
                lags.append(seconds)
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


def dead_letters(bootstrap_servers: str, topic: str, limit: int = 100_000) -> list[dict[str, Any]]:
    """The messages on the dead-letter topic (oldest first): reason, source topic/partition/offset, the event."""
    return read_dead_letters(bootstrap_servers, topic, limit).letters


# -- every group at once, for `pg2neo status`, and the dead letters page by page, for `pg2neo dlq list --kafka` ------

SINK_PREFIX = "kafka:"  # every sink checkpoint's name starts so (transport/sink.py, `checkpoint_name`)


@dataclass(frozen=True)
class CheckpointPlace:
    """What a sink checkpoint's name says: its group and, for a partition's position, the topic and partition."""

    group: str
    topic: str | None = None  # None: the group's base version (`kafka:<group>:base`)
    partition: int | None = None


def checkpoint_place(name: str) -> CheckpointPlace | None:
    """`kafka:<group>:<topic>:<partition>` or `kafka:<group>:base`; None for any other checkpoint. A group id may
    hold `:`, a topic name may not, so the group is everything before the last two parts."""
    if not name.startswith(SINK_PREFIX):
        return None
    rest = name[len(SINK_PREFIX) :]
    if rest.endswith(":base"):
        return CheckpointPlace(rest[: -len(":base")]) if len(rest) > len(":base") else None
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        return None
    return CheckpointPlace(parts[0], parts[1], int(parts[2]))


def _end_to_end_seconds(record: Any) -> float | None:
    """Source commit to Neo4j commit of the last events a checkpoint covers, or None before any was applied."""
    if record["at"] is None or record["source_ms"] is None:
        return None
    at = record["at"]
    committed = at.to_native() if hasattr(at, "to_native") else at
    return float((committed - dt.datetime.fromtimestamp(record["source_ms"] / 1000, dt.UTC)).total_seconds())


def sink_groups_in_graph(driver: Driver, database: str = "neo4j") -> list[dict[str, Any]]:
    """Every sink group Neo4j holds checkpoints of, with what Neo4j alone knows of it: the applied position of each
    partition, the end-to-end lag of the last events applied, and the relationships waiting for an end node (the
    graph's, shared by all groups). The figures that need Kafka (workers, ends, lag, dead letters) are None. The
    same shape as `sink_status`, so a caller that reaches Kafka replaces a group by its `sink_status`."""
    with driver.session(database=database) as session:
        checkpoints = list(session.run(SINK_CHECKPOINTS, prefix=SINK_PREFIX))
        pending_record = session.run(PENDING_COUNT).single()
    pending = 0 if pending_record is None else int(pending_record["c"])
    groups: dict[str, dict[str, Any]] = {}
    for checkpoint in checkpoints:
        place = checkpoint_place(str(checkpoint["name"]))
        if place is None:
            continue
        group = groups.setdefault(
            place.group,
            {
                "group": place.group,
                "workers": None,
                "partitions": [],
                "lag": None,
                "end_to_end_seconds": None,
                "pending_relationships": pending,
                "dead_letters": None,
            },
        )
        if place.topic is None or place.partition is None:
            continue
        group["partitions"].append(
            {
                "topic": place.topic,
                "partition": place.partition,
                "applied": int(checkpoint["next"]),
                "end": None,
                "lag": None,
            }
        )
        seconds = _end_to_end_seconds(checkpoint)
        if seconds is not None:
            latest = group["end_to_end_seconds"]
            group["end_to_end_seconds"] = round(seconds if latest is None else max(latest, seconds), 3)
    for group in groups.values():
        group["partitions"].sort(key=lambda p: (p["topic"], p["partition"]))
    return [groups[name] for name in sorted(groups)]


def _reason(exc: Exception) -> str:
    """librdkafka's own words for a `KafkaException` (its `KafkaError`), without the code dump."""
    describe = getattr(exc.args[0], "str", None) if exc.args else None
    return str(describe()) if callable(describe) else str(exc)


def check_kafka(bootstrap_servers: str, timeout: float = 5.0) -> None:
    """Raise a `ConfigError` that says what is wrong and how to fix it when no broker answers within `timeout`."""
    from confluent_kafka import Consumer, KafkaException

    consumer = None
    try:
        consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "pg2neo-probe", "log_level": 0})
        consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConfigError(
            f"cannot reach Kafka at {bootstrap_servers} within {timeout:.0f} s ({_reason(exc)}): check "
            "--bootstrap-servers "
            "(host:port, comma-separated), or start the local Kafka with `pg2neo dev up --kafka`"
        ) from None
    finally:
        if consumer is not None:
            consumer.close()


@dataclass(frozen=True)
class DeadLetterPage:
    letters: list[dict[str, Any]]  # oldest first
    total: int  # on the topic
    topic_exists: bool


def _number(header: str | None) -> int | str | None:
    return int(header) if header is not None and header.isdigit() else header


def _dead_letter(message: Any) -> dict[str, Any]:
    """One message of the dead-letter topic: its id there (`partition:offset`), when it was dead-lettered, the
    reason and the source topic, partition and offset (the sink's headers), the event's operation, key and value."""
    raw_headers: Any = message.headers() or []
    headers = {str(k): _text(v) for k, v in raw_headers}
    value = (message.value() or b"").decode(errors="replace")
    try:
        event = json.loads(value)
    except ValueError:
        event = None
    kind, stamp = message.timestamp()
    return {
        "id": f"{message.partition()}:{message.offset()}",
        "dead_lettered_at": None if kind == 0 else dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat(),
        "reason": headers.get("pg2neo.reason"),
        "topic": headers.get("pg2neo.topic"),
        "partition": _number(headers.get("pg2neo.partition")),
        "offset": _number(headers.get("pg2neo.offset")),
        "op": event.get("op") if isinstance(event, dict) else None,
        "key": _text(message.key()),
        "value": value[:2000],
    }


def read_dead_letters(bootstrap_servers: str, topic: str, limit: int = 100, timeout: float = 30.0) -> DeadLetterPage:
    """The oldest `limit` messages of the dead-letter topic, read from each partition's start up to its end as it
    was when the read began (so the read ends as soon as they are in, not after a quiet spell)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"pg2neo-dlq-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    letters: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return DeadLetterPage([], 0, topic_exists=False)
        stop_at: dict[int, int] = {}
        starts: list[Any] = []
        total = 0
        for number in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
            total += max(0, high - low)
            if high > low and limit > 0:
                stop_at[number] = min(high, low + limit)
                starts.append(TopicPartition(topic, number, low))
        if starts:
            consumer.assign(starts)
        deadline = time.monotonic() + timeout
        while stop_at and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                end = stop_at.get(message.partition() or 0)
                if end is not None and (message.offset() or 0) < end:
                    letters.append(_dead_letter(message))
            for position in consumer.position([TopicPartition(topic, number) for number in stop_at]):
                if position.offset >= stop_at[position.partition]:
                    del stop_at[position.partition]
    except KafkaException as exc:
        raise ConfigError(
            f"reading the dead-letter topic {topic} from Kafka at {bootstrap_servers} failed ({_reason(exc)}): "
            "check that the brokers are up and reachable, then try again"
        ) from None
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d["dead_lettered_at"] or "", *map(int, d["id"].split(":"))))
    return DeadLetterPage(letters[:limit], total, topic_exists=True)


def sink_overview(
    driver: Driver, bootstrap_servers: str | None, dead_letter_topic: str, database: str = "neo4j"
) -> dict[str, Any] | None:
    """Every sink group Neo4j holds checkpoints of, with Kafka's figures (`sink_status`) when `bootstrap_servers` is
    given and answers; None when Neo4j holds no sink checkpoint. `kafka_error` says why Kafka's figures are missing
    (None when they are there, or when no brokers were given: the caller says how to give them)."""
    from confluent_kafka import KafkaException

    groups = sink_groups_in_graph(driver, database)
    if not groups:
        return None
    overview: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "dead_letter_topic": dead_letter_topic,
        "kafka_error": None,
        "groups": groups,
    }
    if bootstrap_servers is None:
        return overview
    try:
        check_kafka(bootstrap_servers)
        overview["groups"] = [
            sink_status(bootstrap_servers, group["group"], dead_letter_topic, driver, database) for group in groups
        ]
    except ConfigError as exc:
        overview["kafka_error"] = str(exc)
    except KafkaException as exc:  # the brokers went away between the check and the reads
        overview["kafka_error"] = f"Kafka at {bootstrap_servers} failed while being read ({_reason(exc)}): try again"
    return overview
