"""The Neo4j writer: one batch, one Neo4j transaction, its checkpoint included.

Order inside the transaction: node deletes, node upserts, foreign-key relationships, join-table relationships
(cleared where moved or gone, then merged). The read behind a batch is one PostgreSQL snapshot, so a node it
deletes is never the endpoint of a relationship it writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, TypeVar

from neo4j import Driver, ManagedTransaction, Transaction

from pg2neo.apply.batch import GraphBatch
from pg2neo.apply.cypher import (
    AWAIT_INDEXES,
    CHECKPOINT,
    EPOCH_CLAIM,
    EPOCH_CONSTRAINT,
    EPOCH_MISSING,
    EPOCH_SEED,
    HIGHEST_VERSION,
    PING,
    JoinStatements,
    NodeStatements,
    constraint_statement,
    join_statements,
    node_statements,
)
from pg2neo.errors import EpochBehind
from pg2neo.mapping.plan import Mapping

T = TypeVar("T")


class GraphWriter:
    def __init__(self, driver: Driver, mapping: Mapping, database: str = "neo4j") -> None:
        self.driver = driver
        self.mapping = mapping
        self.database = database
        self.node_cypher: dict[str, NodeStatements] = {n.table: node_statements(n) for n in mapping.nodes}
        self.join_cypher: dict[str, JoinStatements] = {j.table: join_statements(j) for j in mapping.joins}

    def schema_statements(self) -> list[str]:
        """Uniqueness constraints on every node key (and the epoch node), indexes on join relationships' keys."""
        return (
            [constraint_statement(n) for n in self.mapping.nodes]
            + [s.index for s in self.join_cypher.values()]
            + [EPOCH_CONSTRAINT]
        )

    def ensure_schema(self) -> None:
        with self.driver.session(database=self.database) as session:
            for statement in self.schema_statements():
                session.run(statement).consume()
            session.run(AWAIT_INDEXES).consume()
            missing = session.run(EPOCH_MISSING).single()
            if missing is not None and missing["missing"]:
                # A graph synced before the epoch node existed: start it at the highest version stamped anywhere.
                record = session.run(HIGHEST_VERSION).single()
                high = None if record is None else record["high"]
                if high is not None:
                    session.run(EPOCH_SEED, high=high).consume()

    def write(self, batch: GraphBatch, epoch: int, checkpoint: tuple[str, int] | None = None) -> dict[str, int]:
        """Write one batch in one transaction; returns the rows the version guards refused, per label or type.

        Raises `EpochBehind` (nothing written) when the graph has seen a newer epoch than `epoch`."""
        synced_at = dt.datetime.now(dt.UTC)
        with self.driver.session(database=self.database) as session:
            return session.execute_write(self.write_in, batch, epoch, synced_at, checkpoint)

    def write_in(
        self,
        tx: ManagedTransaction | Transaction,
        batch: GraphBatch,
        epoch: int,
        synced_at: dt.datetime,
        checkpoint: tuple[str, int] | None,
    ) -> dict[str, int]:
        """Write one batch inside `tx` (a managed transaction, or strict mode's explicit one, which it commits)."""
        claim = tx.run(EPOCH_CLAIM, epoch=epoch).single()
        high = None if claim is None else claim["high"]
        if high is not None and high > epoch:
            raise EpochBehind(epoch, int(high))
        common: dict[str, Any] = {"epoch": epoch, "synced_at": synced_at}
        refused: dict[str, int] = {}
        for table, writes in batch.nodes.items():
            for keys in chunks(writes.deletes):
                record = tx.run(self.node_cypher[table].delete, keys=keys, **common).single()
                _count(refused, writes.table.label, 0 if record is None else int(record["refused"]))
        for table, writes in batch.nodes.items():
            for upserts in chunks(writes.upserts):
                rows = epoch_rows(upserts, writes.table.epoch_props)
                record = tx.run(self.node_cypher[table].upsert, rows=rows, **common).single()
                _count(refused, writes.table.label, len(rows) - (0 if record is None else int(record["applied"])))
        for table, writes in batch.nodes.items():
            for statement, links in zip(self.node_cypher[table].links, writes.links, strict=True):
                for link_rows in chunks(links):
                    tx.run(statement, rows=link_rows, **common).consume()
        for table, joins in batch.joins.items():
            clear = [{"key": k, "a": None, "b": None} for k in joins.deletes]
            clear += [{"key": u["key"], "a": u["a"], "b": u["b"]} for u in joins.upserts]
            for clear_rows in chunks(clear):
                record = tx.run(self.join_cypher[table].clear, rows=clear_rows, **common).single()
                _count(refused, joins.table.type, 0 if record is None else int(record["refused"]))
            for join_rows in chunks(joins.upserts):
                record = tx.run(self.join_cypher[table].upsert, rows=join_rows, **common).single()
                _count(refused, joins.table.type, len(join_rows) - (0 if record is None else int(record["applied"])))
        if checkpoint is not None:
            name, last_seq = checkpoint
            tx.run(CHECKPOINT, name=name, last_seq=last_seq, **common).consume()
        return refused

    def probe(self) -> None:
        """A write transaction that touches no data: succeeds when Neo4j takes writes (tells a row's failure from
        the server's)."""
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: tx.run(PING).consume())

    def truncate(self, table: str) -> None:
        """Empty a label or relationship type (auto-commit, in chunks: `CALL {} IN TRANSACTIONS`)."""
        statement = self.node_cypher[table].truncate if table in self.node_cypher else self.join_cypher[table].truncate
        with self.driver.session(database=self.database) as session:
            session.run(statement).consume()


def _count(refused: dict[str, int], name: str, count: int) -> None:
    if count:
        refused[name] = refused.get(name, 0) + count


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Rows per statement. A batch's rows go to Neo4j in statements of at most this many rows, all in the batch's one
# transaction: the driver packs a statement's parameters whole, and packing 5,000 wide rows at once took ~60 MB
# for a moment (measured with tracemalloc), the peak of `pg2neo run`'s memory.
STATEMENT_ROWS = 1000


def chunks(rows: list[T]) -> Iterator[list[T]]:
    for at in range(0, len(rows), STATEMENT_ROWS):
        yield rows[at : at + STATEMENT_ROWS]


def epoch_rows(upserts: list[dict[str, Any]], props: tuple[str, ...]) -> list[dict[str, Any]]:
    """The upsert rows with their timestamptz properties moved to `e` as [epoch seconds, nanoseconds] (exact
    integers; the Cypher makes them DateTimes), sparing the driver's pure-Python datetime packing. New dicts: a
    retried transaction sends the batch again."""
    if not props:
        return upserts
    rows = []
    for upsert in upserts:
        sent = dict(upsert["p"])
        epochs = {}
        for name in props:
            value = sent.pop(name, None)
            if value is not None:
                delta = value - _EPOCH
                epochs[name] = [delta.days * 86_400 + delta.seconds, delta.microseconds * 1000]
        rows.append({"k": upsert["k"], "p": sent, "e": epochs})
    return rows
