"""pg2neo's Kafka sink: consumer-group workers that apply Debezium change events to Neo4j through the apply core.

Place in the data flow: transport (Kafka topics, one per mapped table, keyed by the row's pg2neo key) -> apply
(`Applier` with a `GraphWriter` in awaiting mode). No PostgreSQL read happens here: the events carry the rows (the
mapping is resolved once, at start).

- **Exactly-once effect**: each partition's next offset is a `_Pg2neoCheckpoint` node (`kafka:<group>:<topic>:<p>`)
  stored in the same Neo4j transaction as the writes it covers, fenced: stored only if it still holds the offset
  this worker started from, so two workers briefly given one partition in a rebalance never both apply it. Kafka
  offsets are committed only after, as a hint for lag tools. On every assignment the worker seeks to the offsets
  Neo4j holds (the beginning when it holds none).
- **Version guard by source position**: every row carries its own version, `base` + its change's LSN
  (`events.SourcePosition`; snapshot reads `base` + 0), where `base` is the graph's epoch mark when the group first
  ran (0 on an empty graph; a graph written by trigger mode before keeps being overwritten). A replayed or late
  event never overwrites newer state, and a delete is never undone. The graph-wide epoch mark is raised now and
  then, not claimed by every write (the workers would take turns on it).
- **Relationships in any order**: an end node that has not arrived yet is waited for (`apply/endpoints.py`), never
  created empty; a foreign key that references non-key columns finds its target by those properties.
- **TOAST**: an unchanged large value arrives as a placeholder; the value from an earlier event of the same key in
  the batch, or the one Neo4j holds, is written instead, never the placeholder; with neither, a dead letter.
- **Bad events** (malformed, unmapped, undecodable, values Neo4j refuses): produced to the dead-letter topic with
  the reason in headers, and flushed, before the checkpoint that passes them is stored; the worker goes on.
- **Transient failures** (Neo4j or the broker away, deadlocks): the same events are retried with backoff, forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver
from prometheus_client import Counter, Gauge

from pg2neo.apply.core import UNSTORABLE, Applier, Epoch, ReadRow
from pg2neo.apply.cypher import CHECKPOINT_LABEL, REL_KEY, SINK_BASE, q
from pg2neo.apply.failures import about_the_servers
from pg2neo.apply.writer import Checkpoint, GraphWriter
from pg2neo.errors import CheckpointFenced, MappingError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.transport.debezium import ConnectorNames, check_mapping, topic_of
from pg2neo.transport.events import UNAVAILABLE, BadEvent, Change, EventDecoder

log = get_logger("kafka.sink")

APPLIED = Counter("pg2neo_sink_applied_events", "Debezium events applied to Neo4j by this worker")
SINK_BATCHES = Counter("pg2neo_sink_batches", "Neo4j transactions committed by this worker")
SINK_DEAD = Counter("pg2neo_sink_dead_letters", "Events sent to the dead-letter topic by this worker")
SINK_RETRIES = Counter("pg2neo_sink_retries", "Transient failures retried by this worker")
SINK_FENCED = Counter("pg2neo_sink_fenced", "Writes rolled back because another worker had moved the partition")
END_TO_END = Gauge("pg2neo_sink_lag_seconds", "Source commit to Neo4j commit, of the last event applied")
PARTITIONS = Gauge("pg2neo_sink_partitions", "Partitions assigned to this worker")
PARTITION_LAG = Gauge(
    "pg2neo_sink_partition_lag", "Events not yet applied, per assigned partition", ["topic", "partition"]
)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class SinkConfig:
    bootstrap_servers: str
    group_id: str = "pg2neo-sink"
    names: ConnectorNames = field(default_factory=ConnectorNames)
    dead_letter_topic: str = "pg2neo.dead-letters"
    batch_rows: int = 5000
    poll_seconds: float = 0.2
    epoch_mark_seconds: float = 5.0
    # A stable name for this worker (Kafka's static membership): restarted with the same name, it gets its
    # partitions back at once instead of waiting for the group to notice the old process is gone.
    instance_id: str | None = None


@dataclass
class SinkCounts:
    applied: int = 0
    dead_letters: int = 0
    refused: int = 0
    batches: int = 0
    fenced: int = 0
    retries: int = 0


def checkpoint_name(group: str, topic: str, partition: int) -> str:
    return f"kafka:{group}:{topic}:{partition}"


class DeadLetterUnsent(ConnectionError):
    """The dead-letter topic did not take a message in time: nothing passes it until it does (retried)."""


@dataclass
class _Pending:
    """The events of one partition being gathered into one write: the latest read of each key, in order."""

    reads: dict[tuple[str, tuple[str, ...]], tuple[ReadRow, Any]] = field(default_factory=dict)
    toasted: list[tuple[ReadRow, Any]] = field(default_factory=list)
    dead: list[tuple[Any, str]] = field(default_factory=list)
    high: int = 0
    source_ms: int | None = None


class Sink:
    def __init__(self, config: SinkConfig, driver: Driver, mapping: Mapping, database: str = "neo4j") -> None:
        blocking = [p for p in check_mapping(mapping) if p.blocking]
        if blocking:
            raise MappingError(
                "the mapping cannot be applied from Debezium events:\n" + "\n".join(str(p) for p in blocking)
            )
        self.config = config
        self.driver = driver
        self.mapping = mapping
        self.database = database
        self.writer = GraphWriter(driver, mapping, database, awaiting=True, claim_epoch=False)
        self.applier = Applier(mapping, self.writer)
        self.topics = {topic_of(config.names, e.table): e.table for e in mapping.entries}
        self.decoder = EventDecoder(mapping, self.topics)
        self.counts = SinkCounts()
        self._consumer: Any = None
        self._producer: Any = None
        self._expected: dict[tuple[str, int], int | None] = {}  # the offset Neo4j holds, per assigned partition
        self._high_epoch = 0
        self.base = 0
        self._marked_epoch = 0
        self._marked_at = 0.0

    def ensure_schema(self) -> None:
        self.writer.ensure_schema()

    # -- Kafka ----------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        from confluent_kafka import Consumer, Producer

        self.base = self._read_base()
        settings: dict[str, Any] = {}
        if self.config.instance_id:
            settings["group.instance.id"] = self.config.instance_id
        self._consumer = Consumer(
            {
                **settings,
                "bootstrap.servers": self.config.bootstrap_servers,
                "group.id": self.config.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 600_000,
                # Debezium creates a table's topic with its first event: a worker started before that must see
                # the topic soon, not at librdkafka's default refresh (5 minutes).
                "topic.metadata.refresh.interval.ms": 2_000,
            }
        )
        self._producer = Producer(
            {"bootstrap.servers": self.config.bootstrap_servers, "acks": "all", "enable.idempotence": True}
        )
        self._consumer.subscribe(sorted(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _read_base(self) -> int:
        """The graph's epoch mark when this group first ran (0 on an empty graph), kept in Neo4j for the group."""
        name = f"kafka:{self.config.group_id}:base"
        while True:
            try:
                with self.driver.session(database=self.database) as session:
                    record = session.execute_write(
                        lambda tx: tx.run(SINK_BASE, name=name).single()  # one write: every worker reads the same
                    )
                return 0 if record is None else int(record["base"])
            except Exception as exc:
                if not about_the_servers(exc):
                    raise
                self._wait("reading the group's base version", exc, BACKOFF_START)

    def _stored_offsets(self, names: list[str]) -> dict[str, int]:
        while True:
            try:
                with self.driver.session(database=self.database) as session:
                    return {
                        r["name"]: int(r["next"])
                        for r in session.run(
                            f"MATCH (c:{CHECKPOINT_LABEL}) WHERE c.name IN $names "
                            "RETURN c.name AS name, c.last_seq AS next",
                            names=names,
                        )
                        if r["next"] is not None
                    }
            except Exception as exc:
                if not about_the_servers(exc):
                    raise
                self._wait("reading the stored offsets", exc, BACKOFF_START)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Seek every assigned partition to the offset Neo4j holds for it (the start when it holds none)."""
        from confluent_kafka import OFFSET_BEGINNING

        names = {checkpoint_name(self.config.group_id, p.topic, p.partition): p for p in partitions}
        stored = self._stored_offsets(list(names))
        self._expected = {}
        for name, partition in names.items():
            offset = stored.get(name)
            partition.offset = OFFSET_BEGINNING if offset is None else offset
            self._expected[(partition.topic, partition.partition)] = offset
        consumer.assign(partitions)
        PARTITIONS.set(len(partitions))
        event(log, "kafka_partitions_assigned", partitions=len(partitions), stored=len(stored))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for partition in partitions:
            self._expected.pop((partition.topic, partition.partition), None)
        PARTITIONS.set(len(self._expected))

    def close(self) -> None:
        self._mark_epoch(force=True)
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
                    self._mark_epoch()
                    if idle_stop_seconds is not None and time.monotonic() - idle_since > idle_stop_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                self.apply_messages(messages, should_stop)
                self._mark_epoch()
        finally:
            self.close()
        return self.counts

    def apply_messages(self, messages: list[Any], should_stop: Callable[[], bool] = lambda: False) -> None:
        by_partition: dict[tuple[str, int], list[Any]] = {}
        for message in messages:
            if message.error() is not None:
                event(log, "kafka_error", logging.WARNING, error=str(message.error()))
                continue
            by_partition.setdefault((message.topic(), message.partition()), []).append(message)
        commits = []
        for (topic, partition), group in by_partition.items():
            delay = BACKOFF_START
            while not should_stop():
                try:
                    if self._apply_partition(topic, partition, group):
                        commits.append((topic, partition, group[-1].offset() + 1))
                    break
                except CheckpointFenced as fenced:
                    self._refetch(topic, partition, fenced)
                    break
                except Exception as exc:
                    if not about_the_servers(exc):
                        raise
                    delay = self._wait(f"applying {topic}[{partition}]", exc, delay)
        if commits:
            from confluent_kafka import TopicPartition

            # Only a hint for tools that show lag: the offsets that count are in Neo4j.
            try:
                self._consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in commits], asynchronous=True)
            except Exception as exc:  # a broker away: the next commit says it again
                event(log, "kafka_commit_failed", logging.WARNING, error=str(exc))

    def _wait(self, doing: str, exc: Exception, delay: float) -> float:
        self.counts.retries += 1
        SINK_RETRIES.inc()
        event(log, "sink_retry", logging.WARNING, doing=doing, error=f"{type(exc).__name__}: {exc}"[:300], wait=delay)
        # No poll while waiting: a poll hands over the next message, which would be skipped. The consumer's
        # heartbeats go on in librdkafka's own thread; past `max.poll.interval.ms` the worker leaves the group and,
        # back, is given partitions again at the offsets Neo4j holds.
        time.sleep(delay)
        return min(delay * 2, BACKOFF_MAX)

    def _refetch(self, topic: str, partition: int, fenced: CheckpointFenced) -> None:
        """Another worker stored this partition's position: go on from the offset Neo4j now holds."""
        from confluent_kafka import TopicPartition

        self.counts.fenced += 1
        SINK_FENCED.inc()
        stored = self._stored_offsets([fenced.name]).get(fenced.name)
        event(log, "sink_fenced", logging.WARNING, topic=topic, partition=partition, stored=stored)
        if (topic, partition) in self._expected and stored is not None:
            self._expected[(topic, partition)] = stored
            try:
                self._consumer.seek(TopicPartition(topic, partition, stored))
            except Exception as exc:  # the partition went elsewhere meanwhile
                event(log, "sink_seek_failed", logging.WARNING, error=str(exc))

    # -- one partition's events -----------------------------------------------------------------------------------
    def _apply_partition(self, topic: str, partition: int, messages: list[Any]) -> bool:
        """Apply the messages of one partition, in order; False when the partition is no longer this worker's."""
        if (topic, partition) not in self._expected:
            return False
        name = checkpoint_name(self.config.group_id, topic, partition)
        pending = _Pending()
        for message in messages:
            value = message.value()
            if value is None:  # a tombstone: the delete before it did the work
                continue
            try:
                change = self.decoder.decode(topic, value)
            except BadEvent as exc:
                pending.dead.append((message, str(exc)))
                continue
            version = self.base + change.position.epoch
            self._high_epoch = max(self._high_epoch, version)
            if change.op == "t":
                self._write(topic, partition, name, pending, message.offset())
                pending = _Pending()
                self.writer.truncate_up_to(change.entry.table, version)
                continue
            self._gather(pending, change, message, version)
        self._write(topic, partition, name, pending, messages[-1].offset() + 1)
        return True

    def _gather(self, pending: _Pending, change: Change, message: Any, version: int) -> None:
        pending.high = max(pending.high, version)
        if change.position.commit_ms is not None:
            pending.source_ms = change.position.commit_ms
        if change.previous_key is not None:  # the row's key changed: its old node or relationship goes
            gone = ReadRow(change.entry, change.previous_key, None, version)
            pending.reads.pop((change.entry.table, change.previous_key), None)
            pending.reads[(change.entry.table, change.previous_key)] = (gone, message)
        slot = (change.entry.table, change.key)
        earlier = pending.reads.pop(slot, None)
        if change.row is None:
            pending.reads[slot] = (ReadRow(change.entry, change.key, None, version), message)
            return
        row = change.row
        if change.toasted and earlier is not None and earlier[0].row is not None:
            row = _filled(row, earlier[0].row)  # the value arrived with an earlier event of this batch
        read = ReadRow(change.entry, change.key, row, version)
        pending.reads[slot] = (read, message)
        if any(value is UNAVAILABLE for value in row):
            pending.toasted.append((read, message))

    def _write(self, topic: str, partition: int, name: str, pending: _Pending, next_offset: int) -> None:
        """One Neo4j transaction for the gathered events and the partition's next offset (fenced)."""
        self._fill_from_graph(pending)
        reads = [read for read, _ in pending.reads.values()]
        by_key = {(read.entry.table, read.key): message for read, message in pending.reads.values()}
        batch = self.applier.build(reads)
        for failure in batch.failures:  # values Neo4j cannot hold: dead letters before the checkpoint passes them
            pending.dead.append((by_key[(failure.table, failure.key)], failure.reason))
        self._send_dead_letters(pending.dead)
        expected = self._expected.get((topic, partition))
        checkpoint = Checkpoint(name, next_offset, fenced=True, expected=expected, source_ms=pending.source_ms)
        epoch = Epoch(max(pending.high, 1))
        applied = self.applier.write(reads, epoch, checkpoint, built=batch)
        if not applied.checkpointed:  # bisected: the rows Neo4j refused go out first
            refused = [d for d in applied.dead if d.error_class != UNSTORABLE]
            self._send_dead_letters([(by_key[(d.failure.table, d.failure.key)], d.failure.reason) for d in refused])
            self.applier.checkpoint(epoch, checkpoint)
        self._expected[(topic, partition)] = next_offset
        applied_rows = len(reads) - len(applied.dead)
        self.counts.batches += 1
        self.counts.applied += applied_rows
        self.counts.refused += sum(applied.refused.values())
        SINK_BATCHES.inc()
        APPLIED.inc(applied_rows)
        if pending.source_ms is not None:
            END_TO_END.set(max(0.0, time.time() - pending.source_ms / 1000))

    def _send_dead_letters(self, dead: list[tuple[Any, str]]) -> None:
        """Produce each to the dead-letter topic with its reason, and wait until the broker has them all."""
        if not dead:
            return
        for message, reason in dead:
            headers = [
                ("pg2neo.reason", reason.encode()),
                ("pg2neo.topic", message.topic().encode()),
                ("pg2neo.partition", str(message.partition()).encode()),
                ("pg2neo.offset", str(message.offset()).encode()),
            ]
            self._producer.produce(
                self.config.dead_letter_topic, value=message.value(), key=message.key(), headers=headers
            )
            event(
                log,
                "kafka_dead_letter",
                logging.WARNING,
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                reason=reason[:500],
            )
        if self._producer.flush(30) > 0:
            raise DeadLetterUnsent("the dead-letter topic did not take the dead letters within 30 s")
        self.counts.dead_letters += len(dead)
        SINK_DEAD.inc(len(dead))
        dead.clear()

    # -- TOAST ----------------------------------------------------------------------------------------------------
    def _fill_from_graph(self, pending: _Pending) -> None:
        """Put each unchanged TOASTed value back from what Neo4j holds (the event did not carry it)."""
        for read, message in pending.toasted:
            slot = (read.entry.table, read.key)
            current = pending.reads.get(slot)
            if current is None or current[0] is not read:
                continue  # a later event of the key replaced it
            assert read.row is not None
            props = self._current_props(read.entry, read.row)
            entry = read.entry
            row = list(read.row)
            missing = []
            for index, column in enumerate(entry.columns):
                if row[1 + index] is UNAVAILABLE:
                    if props is not None and column.prop in props:
                        row[1 + index] = _reader_form(props[column.prop])
                    else:
                        missing.append(column.name)
            if missing:
                del pending.reads[slot]
                pending.dead.append(
                    (
                        message,
                        f"unchanged TOASTed column(s) {missing} did not arrive and the graph has no value for them; "
                        f"set `ALTER TABLE {entry.table} REPLICA IDENTITY FULL` and run `pg2neo reconcile`",
                    )
                )
                continue
            pending.reads[slot] = (ReadRow(entry, read.key, tuple(row), read.version), message)
        pending.toasted.clear()

    def _current_props(self, entry: NodeTable | JoinTable, row: tuple[Any, ...]) -> dict[str, Any] | None:
        if isinstance(entry, JoinTable):
            from pg2neo.apply.batch import rel_key

            query = f"MATCH ()-[r:{q(entry.type)} {{{REL_KEY}: $key}}]->() RETURN properties(r) AS p"
            params: dict[str, Any] = {"key": rel_key(tuple(row[0]))}
        else:
            converted = self.applier.builder.key_values(entry, row)
            if converted is None:
                return None
            where = " AND ".join(f"n.{q(p)} = $k[{i}]" for i, p in enumerate(entry.key_props))
            query = f"MATCH (n:{q(entry.label)}) WHERE {where} RETURN properties(n) AS p"
            params = {"k": converted}
        with self.driver.session(database=self.database) as session:
            record = session.run(query, params).single()
        return None if record is None else dict(record["p"])

    def _report_lag(self) -> None:
        """The events left per assigned partition: its end (as last fetched) minus the offset Neo4j holds."""
        from confluent_kafka import TopicPartition

        for (topic, partition), expected in list(self._expected.items()):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except Exception:  # not fetched yet
                continue
            if high >= 0:
                PARTITION_LAG.labels(topic, str(partition)).set(max(0, high - (expected or 0)))

    def _mark_epoch(self, force: bool = False) -> None:
        """Every few seconds: raise the graph's epoch mark to the newest epoch applied (so that trigger mode, should
        it write the graph later, stamps newer versions), and report the lag per partition."""
        now = time.monotonic()
        if not force and now - self._marked_at < self.config.epoch_mark_seconds:
            return
        self._marked_at = now
        if self._consumer is not None:
            self._report_lag()
        try:
            self.writer.sweep()
        except Exception as exc:  # a sweep that fails is tried again at the next period; the worker goes on
            event(log, "sweep_failed", logging.WARNING, error=f"{type(exc).__name__}: {exc}"[:500])
        if self._high_epoch <= self._marked_epoch:
            return
        try:
            self.writer.raise_epoch_mark(self._high_epoch)
            self._marked_epoch = self._high_epoch
        except Exception as exc:
            if not about_the_servers(exc):
                raise
            event(log, "epoch_mark_deferred", logging.WARNING, error=type(exc).__name__)


def _filled(row: tuple[Any, ...], earlier: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(e if v is UNAVAILABLE else v for v, e in zip(row, earlier, strict=True))


def _reader_form(value: Any) -> Any:
    """A property read back from Neo4j, as the reader form `convert` takes (only TOASTable kinds reach here)."""
    if isinstance(value, list):
        return [_reader_form(v) for v in value]
    to_native = getattr(value, "to_native", None)
    if callable(to_native):
        return to_native()
    return value


__all__ = ["Sink", "SinkConfig", "SinkCounts", "checkpoint_name"]
