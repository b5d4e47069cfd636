"""pg2neo's Kafka sink: consumer-group workers that apply Debezium change events to Neo4j through the apply core.

Place in the data flow: transport (Kafka topics, one per mapped table, keyed by the row key) -> apply (`GraphWriter`).
No PostgreSQL read happens here: the events carry the rows (the mapping is resolved once, at start).

- **Exactly-once effect**: each partition's next offset is a `_Pg2neoCheckpoint` node (`kafka:<group>:<topic>:<p>`)
  written in the same Neo4j transaction as the writes it covers; Kafka offsets are committed only after, as a hint.
  On every assignment the worker seeks to the offsets stored in Neo4j (the beginning when there are none), so a
  worker killed at any moment, or a rebalance, neither loses nor repeats an effect.
- **Version guard by source position**: events are written in runs that share a source transaction, each run with
  the epoch `base + position` (`events.SourcePosition`): a replayed older event never overwrites a newer state of
  its key. Positions of different partitions interleave, so the graph-wide high-water mark the writer claims must
  not refuse a run that is behind another partition: the writer here claims the mark (so that trigger mode, should
  it write the graph later, moves past it) without raising `EpochBehind`. `base` is the graph's mark when a group
  first starts (0 on an empty graph), so that a graph moved from trigger mode keeps its newer versions.
- **TOAST**: an unchanged large value arrives as a placeholder; the node's current value is read from Neo4j and
  written back, never the placeholder; if the graph does not have it the event is dead-lettered.
- **Bad events** (malformed, unmapped, undecodable, values Neo4j refuses): produced to the dead-letter topic with
  the reason in headers, before the offsets that pass them are stored; the worker goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver, ManagedTransaction
from neo4j.exceptions import ClientError

from pg2neo.apply.cypher import CHECKPOINT, CHECKPOINT_LABEL, EPOCH_LABEL, VERSION, q
from pg2neo.apply.writer import GraphWriter
from pg2neo.logs import event, get_logger
from pg2neo.mapping.ops import BatchBuilder, GraphBatch
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.reconcile.hashing import HASH_PROP, props_hash_hex
from pg2neo.transport.debezium import ConnectorNames, check_mapping, topic_of
from pg2neo.transport.events import UNAVAILABLE, BadEvent, Change, EventDecoder

log = get_logger("kafka.sink")


@dataclass(frozen=True)
class SinkConfig:
    bootstrap_servers: str
    group_id: str = "pg2neo-sink"
    names: ConnectorNames = field(default_factory=ConnectorNames)
    dead_letter_topic: str = "pg2neo.dead-letters"
    batch_rows: int = 2000
    poll_seconds: float = 0.5


@dataclass
class SinkCounts:
    applied: int = 0
    dead_letters: int = 0
    refused: int = 0
    batches: int = 0


def checkpoint_name(group: str, topic: str, partition: int) -> str:
    return f"kafka:{group}:{topic}:{partition}"


class Sink:
    def __init__(self, config: SinkConfig, driver: Driver, mapping: Mapping, database: str = "neo4j") -> None:
        blocking = [p for p in check_mapping(mapping) if p.blocking]
        if blocking:
            from pg2neo.errors import MappingError

            raise MappingError(
                "the mapping cannot be applied from Debezium events:\n" + "\n".join(str(p) for p in blocking)
            )
        self.config = config
        self.driver = driver
        self.mapping = mapping
        self.database = database
        self.writer = GraphWriter(driver, mapping, database, refuse_behind=False)  # partitions' epochs interleave
        self.builder = BatchBuilder(mapping)
        self.topics = {topic_of(config.names, e.table): e.table for e in mapping.entries}
        self.decoder = EventDecoder(mapping, self.topics)
        self.counts = SinkCounts()
        self.base = 0
        self._consumer: Any = None
        self._producer: Any = None

    # -- Kafka ----------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        from confluent_kafka import Consumer, Producer

        self.base = self._epoch_base()
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap_servers,
                "group.id": self.config.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                # Debezium creates a table's topic with its first event: a worker started before that must see
                # the topic soon, not at librdkafka's default refresh (5 minutes).
                "topic.metadata.refresh.interval.ms": 2_000,
            }
        )
        self._producer = Producer(
            {"bootstrap.servers": self.config.bootstrap_servers, "acks": "all", "enable.idempotence": True}
        )
        self._consumer.subscribe(sorted(self.topics), on_assign=self._on_assign)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Seek every assigned partition to the offset Neo4j holds for it (the start when it holds none)."""
        from confluent_kafka import OFFSET_BEGINNING

        names = {checkpoint_name(self.config.group_id, p.topic, p.partition): p for p in partitions}
        with self.driver.session(database=self.database) as session:
            stored = {
                r["name"]: int(r["next"])
                for r in session.run(
                    f"MATCH (c:{CHECKPOINT_LABEL}) WHERE c.name IN $names RETURN c.name AS name, c.last_seq AS next",
                    names=list(names),
                )
            }
        for name, partition in names.items():
            partition.offset = stored.get(name, OFFSET_BEGINNING)
        consumer.assign(partitions)
        event(log, "kafka_partitions_assigned", partitions=len(partitions), stored=len(stored))

    def _epoch_base(self) -> int:
        """The graph's epoch mark when this group first ran (0 on an empty graph), kept in Neo4j."""
        name = f"kafka:{self.config.group_id}:epoch-base"
        with self.driver.session(database=self.database) as session:

            def work(tx: ManagedTransaction) -> int:
                record = tx.run(
                    f"OPTIONAL MATCH (h:{EPOCH_LABEL} {{name: 'epoch'}}) "
                    f"MERGE (c:{CHECKPOINT_LABEL} {{name: $name}}) "
                    "ON CREATE SET c.last_seq = coalesce(h.high, 0) RETURN c.last_seq AS base",
                    name=name,
                ).single()
                return 0 if record is None else int(record["base"])

            return session.execute_write(work)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool], idle_stop_seconds: float | None = None) -> SinkCounts:
        """Consume and apply until `should_stop()` (or until idle this long, for tests and one-shot runs)."""
        self._open()
        idle_since = time.monotonic()
        try:
            while not should_stop():
                messages = self._consumer.consume(self.config.batch_rows, self.config.poll_seconds)
                if not messages:
                    if idle_stop_seconds is not None and time.monotonic() - idle_since > idle_stop_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                self.apply_messages(messages)
        finally:
            self.close()
        return self.counts

    def apply_messages(self, messages: list[Any]) -> None:
        by_partition: dict[tuple[str, int], list[Any]] = {}
        for message in messages:
            if message.error() is not None:
                event(log, "kafka_error", logging.WARNING, error=str(message.error()))
                continue
            by_partition.setdefault((message.topic(), message.partition()), []).append(message)
        commits = []
        for (topic, partition), group in by_partition.items():
            self._apply_partition(topic, partition, group)
            commits.append((topic, partition, group[-1].offset() + 1))
        if commits:
            from confluent_kafka import TopicPartition

            # Only a hint for tools that show lag: the offsets that count are in Neo4j.
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in commits], asynchronous=True)

    def _apply_partition(self, topic: str, partition: int, messages: list[Any]) -> None:
        name = checkpoint_name(self.config.group_id, topic, partition)
        run: list[tuple[Change, Any]] = []
        run_epoch: int | None = None
        for message in messages:
            value = message.value()
            if value is None:  # a tombstone: the delete before it did the work
                continue
            try:
                change = self.decoder.decode(topic, value)
            except BadEvent as exc:
                self._dead_letter(message, str(exc))
                continue
            epoch = self.base + change.position.epoch
            if change.op == "t":
                self._flush(run, run_epoch, name)
                run, run_epoch = [], None
                self._truncate(change, epoch, name, message.offset() + 1)
                continue
            if run and (epoch != run_epoch or len(run) >= self.config.batch_rows):
                self._flush(run, run_epoch, name)
                run = []
            run.append((change, message))
            run_epoch = epoch
        self._flush(run, run_epoch, name, messages[-1].offset() + 1)

    def _flush(
        self, run: list[tuple[Change, Any]], epoch: int | None, name: str, next_offset: int | None = None
    ) -> None:
        """Write one run (one source transaction, one partition) and its checkpoint in one Neo4j transaction."""
        if not run and next_offset is None:
            return
        if run:
            next_offset = run[-1][1].offset() + 1 if next_offset is None else next_offset
        assert next_offset is not None
        # The last event of each key wins: the writer deletes before it upserts.
        latest: dict[tuple[str, tuple[str, ...]], tuple[Change, Any]] = {}
        for change, message in run:
            latest.pop((change.entry.table, change.key), None)
            latest[(change.entry.table, change.key)] = (change, message)
        changes = list(latest.values())
        changes = self._fill_toasted(changes)
        self._write(changes, epoch if epoch is not None else self.base, (name, next_offset))

    def _build(self, changes: Iterable[tuple[Change, Any]]) -> tuple[GraphBatch, list[tuple[Any, str]]]:
        batch = self.builder.new_batch()
        failed: list[tuple[Any, str]] = []
        for change, message in changes:
            if change.row is None:
                self.builder.add_deletes(batch, change.entry, [change.key])
            else:
                self.builder.add_rows(batch, change.entry, [change.row])
            for failure in batch.failures:
                failed.append((message, failure.reason))
            batch.failures.clear()
        return batch, failed

    def _write(self, changes: list[tuple[Change, Any]], epoch: int, checkpoint: tuple[str, int]) -> None:
        batch, failed = self._build(changes)
        for message, reason in failed:
            self._dead_letter(message, reason)
        try:
            refused = self.writer.write(batch, epoch, checkpoint)
        except ClientError as exc:
            if len(changes) <= 1:
                self.writer.probe()  # a server that takes no write is not the row's fault: let it raise
                for _, message in changes:
                    self._dead_letter(message, f"Neo4j refused the row: {exc.code}: {exc.message}")
                self.writer.write(self.builder.new_batch(), epoch, checkpoint)
                return
            # Isolate the refused rows: one change per transaction, the checkpoint with the last.
            for index, item in enumerate(changes):
                last = index == len(changes) - 1
                self._write([item], epoch, checkpoint if last else (checkpoint[0], item[1].offset() + 1))
            return
        self.counts.batches += 1
        self.counts.applied += len(changes) - len(failed)
        total_refused = sum(refused.values())
        self.counts.refused += total_refused
        if total_refused:
            event(log, "version_guard_refused", refused=refused, epoch=epoch)

    def _fill_toasted(self, changes: list[tuple[Change, Any]]) -> list[tuple[Change, Any]]:
        """Put each unchanged TOASTed value back from the node Neo4j holds (the event did not carry it)."""
        out = []
        for change, message in changes:
            if not change.toasted:
                out.append((change, message))
                continue
            current = self._current_props(change)
            if current is None or any(p not in current for p in change.toasted):
                self._dead_letter(
                    message,
                    f"unchanged TOASTed column(s) {list(change.toasted)} did not arrive and the graph has no value "
                    f"for them; set `ALTER TABLE {change.entry.table} REPLICA IDENTITY FULL` or run "
                    "`pg2neo reconcile`",
                )
                continue
            assert change.row is not None
            row = list(change.row)
            for index, column in enumerate(change.entry.columns):
                if row[1 + index] is UNAVAILABLE:
                    row[1 + index] = _reader_form(current[column.prop])
            out.append((Change(change.entry, change.op, change.key, tuple(row), change.position), message))
        return out

    def _current_props(self, change: Change) -> dict[str, Any] | None:
        entry = change.entry
        if isinstance(entry, JoinTable):
            query = f"MATCH ()-[r:{q(entry.type)} {{_pg2neo_key: $key}}]->() RETURN properties(r) AS p"
            from pg2neo.mapping.ops import rel_key

            params: dict[str, Any] = {"key": rel_key(change.key)}
        else:
            assert isinstance(entry, NodeTable)
            assert change.row is not None
            by_name = {c.name: i for i, c in enumerate(entry.columns)}
            key = [change.row[1 + by_name[name]] for name in entry.key_columns]
            props = {p: v for p, v in zip(entry.key_props, key, strict=True)}
            match = ", ".join(f"{q(p)}: $k.{q(p)}" for p in props)
            query = f"MATCH (n:{q(entry.label)} {{{match}}}) RETURN properties(n) AS p"
            params = {"k": {p: _neo4j_key(v) for p, v in props.items()}}
        with self.driver.session(database=self.database) as session:
            record = session.run(query, **params).single()
        return None if record is None else dict(record["p"])

    def _truncate(self, change: Change, epoch: int, name: str, next_offset: int) -> None:
        """Empty the table's label or type of what was written before the TRUNCATE (newer rows stay)."""
        entry = change.entry
        if isinstance(entry, NodeTable):
            statement = (
                f"MATCH (n:{q(entry.label)}) WHERE coalesce(n.{VERSION}, 0) <= $epoch "
                "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
            )
        else:
            statement = (
                f"MATCH ()-[r:{q(entry.type)}]->() WHERE coalesce(r.{VERSION}, 0) <= $epoch "
                "CALL (r) { DELETE r } IN TRANSACTIONS OF 10000 ROWS"
            )
        with self.driver.session(database=self.database) as session:
            session.run(statement, epoch=epoch).consume()  # auto-commit; idempotent, so a replay is harmless
        self.writer.write(self.builder.new_batch(), epoch, (name, next_offset))
        event(log, "kafka_truncate_applied", table=entry.table, epoch=epoch)

    def _dead_letter(self, message: Any, reason: str) -> None:
        """Produce the event to the dead-letter topic with its reason, synchronously (before its offset is stored)."""
        headers = [
            ("pg2neo.reason", reason.encode()),
            ("pg2neo.topic", message.topic().encode()),
            ("pg2neo.partition", str(message.partition()).encode()),
            ("pg2neo.offset", str(message.offset()).encode()),
        ]
        self._producer.produce(self.config.dead_letter_topic, value=message.value(), key=message.key(), headers=headers)
        self._producer.flush(30)
        self.counts.dead_letters += 1
        event(
            log,
            "kafka_dead_letter",
            logging.WARNING,
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            reason=reason[:500],
        )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _neo4j_key(value: Any) -> Any:
    return str(value) if not isinstance(value, int | float | str | bool) else value


def _reader_form(value: Any) -> Any:
    """A property read back from Neo4j, as the reader form `convert` takes (only TOASTable kinds reach here)."""
    if isinstance(value, list):
        return [_reader_form(v) for v in value]
    to_native = getattr(value, "to_native", None)
    if callable(to_native):
        return to_native()
    return value


def dead_letters(bootstrap_servers: str, topic: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every message on the dead-letter topic (for the CLI and tests): reason, source topic/partition/offset."""
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"pg2neo-dlq-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
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
            raw_headers: Any = message.headers() or []  # a list of (name, value) pairs from the consumer
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


__all__ = ["CHECKPOINT", "HASH_PROP", "Sink", "SinkConfig", "dead_letters", "json", "props_hash_hex"]
