"""The apply core without servers: how a refused batch is bisected into dead letters, how an epoch behind the graph's
is moved and the batch written again, and when a failure is the servers' and must stand.

The writer here is a recording stand-in for `GraphWriter` (this file tests the core's decisions, not sync; the
integration tests drive the real writer against Neo4j)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from neo4j.exceptions import ClientError, ServiceUnavailable

from pg2neo.apply.batch import GraphBatch
from pg2neo.apply.core import UNSTORABLE, Applier, Epoch, ReadRow
from pg2neo.apply.writer import Checkpoint
from pg2neo.errors import EpochBehind
from pg2neo.mapping.plan import Column, Mapping, NodeTable, SelectAs, ValueKind

ITEMS = NodeTable(
    table="public.items",
    schema="public",
    name="items",
    labels=("Item",),
    key_columns=("id",),
    key_props=("id",),
    key_types=("integer",),
    columns=(
        Column("id", "id", "integer", ValueKind.INT, SelectAs.RAW),
        Column("name", "name", "text", ValueKind.TEXT, SelectAs.RAW),
        Column("price", "price", "numeric", ValueKind.NUMERIC, SelectAs.RAW),
    ),
)
MAPPING = Mapping(nodes=(ITEMS,), joins=())


def _refused(code: str = "Neo.ClientError.Statement.ArgumentError") -> ClientError:
    error = ClientError("the row cannot be stored")
    error._neo4j_code = code  # type: ignore[attr-defined]
    return error


class Writer:
    """Refuses any batch holding a poisoned id; records each batch it accepts and each probe."""

    def __init__(self, poisoned: set[int], down: bool = False, graph_high: int | None = None) -> None:
        self.poisoned = poisoned
        self.down = down
        self.graph_high = graph_high
        self.written: list[tuple[list[int], list[int], int]] = []
        self.probes = 0
        self.awaiting = None
        self.checkpoints: list[tuple[list[int], Checkpoint]] = []

    def write(self, batch: GraphBatch, epoch: int, checkpoint: Checkpoint | None = None) -> dict[str, int]:
        if self.graph_high is not None and epoch < self.graph_high:
            raise EpochBehind(epoch, self.graph_high)
        writes = batch.nodes.get(ITEMS.table)
        ids = [] if writes is None else [u["k"][0] for u in writes.upserts]
        deleted = [] if writes is None else [k[0] for k in writes.deletes]
        if self.poisoned & set(ids):
            raise _refused()
        self.written.append((ids, deleted, epoch))
        if checkpoint is not None:
            self.checkpoints.append((ids, checkpoint))
        return {}

    def probe(self) -> None:
        self.probes += 1
        if self.down:
            raise ServiceUnavailable("Neo4j is away")


def _applier(writer: Writer, advance: Any = None) -> Applier:
    return Applier(MAPPING, writer, advance)  # type: ignore[arg-type]


def _reads(ids: range, gone: tuple[int, ...] = ()) -> list[ReadRow]:
    rows = [ReadRow(ITEMS, (str(i),), ((str(i),), i, f"item {i}", Decimal(i))) for i in ids]
    return rows + [ReadRow(ITEMS, (str(i),), None) for i in gone]


def test_a_refused_batch_is_bisected_until_the_bad_rows_are_alone() -> None:
    writer = Writer(poisoned={3, 11})
    applied = _applier(writer).write(_reads(range(16)), Epoch(7))

    assert sorted(d.failure.key for d in applied.dead) == [("11",), ("3",)]
    assert all(d.error_class == "ClientError" for d in applied.dead)
    assert all("Neo4j refused the row" in d.failure.reason for d in applied.dead)
    landed = sorted(i for ids, _, _ in writer.written for i in ids)
    assert landed == [i for i in range(16) if i not in (3, 11)]
    assert all(epoch == 7 for _, _, epoch in writer.written)
    # the merged batch counts every row that landed, once
    assert applied.batch.counts() == {"Item:upsert": 14}
    # log2(16) levels: far fewer writes than one per row
    assert len(writer.written) < 16


def test_a_checkpoint_goes_with_a_whole_batch_but_never_with_a_bisected_half() -> None:
    writer = Writer(poisoned=set())
    applied = _applier(writer).write(_reads(range(4)), Epoch(1), Checkpoint("source", 10))
    assert applied.checkpointed and writer.checkpoints == [([0, 1, 2, 3], Checkpoint("source", 10))]

    writer = Writer(poisoned={2})
    applier = _applier(writer)
    applied = applier.write(_reads(range(4)), Epoch(1), Checkpoint("source", 10))
    assert not applied.checkpointed and writer.checkpoints == []  # the caller records the dead letter first
    applier.checkpoint(Epoch(1), Checkpoint("source", 10))
    assert writer.checkpoints == [([], Checkpoint("source", 10))]


def test_a_lone_refused_row_stands_when_neo4j_is_down_too() -> None:
    writer = Writer(poisoned={0}, down=True)
    with pytest.raises(ClientError):
        _applier(writer).write(_reads(range(1)), Epoch(1))
    assert writer.probes == 1
    assert writer.written == []


def test_a_server_failure_is_not_bisected() -> None:
    class Away(Writer):
        def write(self, batch: GraphBatch, epoch: int, checkpoint: Checkpoint | None = None) -> dict[str, int]:
            raise ServiceUnavailable("Neo4j is away")

    writer = Away(poisoned=set())
    with pytest.raises(ServiceUnavailable):
        _applier(writer).write(_reads(range(8)), Epoch(1))
    assert writer.probes == 0


def test_deletes_and_unconvertible_rows() -> None:
    writer = Writer(poisoned=set())
    bad = ReadRow(ITEMS, ("9",), (("9",), 9, "x", Decimal("1e400")))  # beyond Float: refused
    applied = _applier(writer).write([*_reads(range(2), gone=(5,)), bad], Epoch(3))

    assert writer.written == [([0, 1], [5], 3)]
    assert [(d.failure.key, d.error_class) for d in applied.dead] == [(("9",), UNSTORABLE)]
    assert applied.counts() == {"Item:upsert": 2, "Item:delete": 1, "dead_letters": 1}


def test_an_epoch_behind_the_graph_is_advanced_and_the_batch_written_again() -> None:
    writer = Writer(poisoned=set(), graph_high=40)
    asked: list[int] = []

    def advance(high: int) -> int:
        asked.append(high)
        return high + 1

    epoch = Epoch(5)
    _applier(writer, advance).write(_reads(range(3)), epoch)
    assert asked == [40]
    assert epoch.value == 41
    assert writer.written == [([0, 1, 2], [], 41)]


def test_without_an_advance_an_epoch_behind_reaches_the_caller() -> None:
    with pytest.raises(EpochBehind):
        _applier(Writer(poisoned=set(), graph_high=40)).write(_reads(range(3)), Epoch(5))
