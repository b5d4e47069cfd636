"""The Neo4j writer: one batch, one Neo4j transaction, its checkpoint included.

Order inside the transaction: node deletes, node upserts, foreign-key relationships, join-table relationships
(cleared where moved or gone, then merged). The read behind a batch is one PostgreSQL snapshot, so a node it
deletes is never the endpoint of a relationship it writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, NamedTuple, TypeVar

from neo4j import Driver, ManagedTransaction, Transaction

from pg2neo.apply.batch import GraphBatch
from pg2neo.apply.cypher import (
    AWAIT_INDEXES,
    CHECKPOINT,
    CHECKPOINT_FENCED,
    EPOCH_CLAIM,
    EPOCH_CONSTRAINT,
    EPOCH_MISSING,
    EPOCH_SEED,
    HIGHEST_VERSION,
    PENDING_COUNT,
    PING,
    JoinStatements,
    NodeStatements,
    constraint_statement,
    join_statements,
    node_statements,
)
from pg2neo.apply.endpoints import Awaiting
from pg2neo.errors import CheckpointFenced, EpochBehind
from pg2neo.mapping.plan import Mapping

T = TypeVar("T")


class Checkpoint(NamedTuple):
    """A source's position, stored in the write transaction. `fenced`: stored only if the graph still holds
    `expected` (checked first thing, under the checkpoint's write lock), else `CheckpointFenced` and nothing is
    written: two workers given one Kafka partition during a rebalance never both apply it."""

    name: str
    position: int
    fenced: bool = False
    expected: int | None = None
    source_ms: int | None = None  # when the last change it covers was committed at the source (for lag)


class GraphWriter:
    """Writes batches to one Neo4j database.

    `awaiting=True` is for sources whose tables arrive independently (the Kafka sink): a relationship never creates
    its end node; one whose end is missing waits for it (`apply/endpoints.py`). `claim_epoch=False` leaves the graph's
    epoch mark alone (the sink's partitions interleave their epochs, each key's order is its partition's and the
    version guards do the rest; one mark claimed by every write would make the workers take turns): the sink
    raises it now and then with `raise_epoch_mark`."""

    def __init__(
        self,
        driver: Driver,
        mapping: Mapping,
        database: str = "neo4j",
        *,
        awaiting: bool = False,
        claim_epoch: bool = True,
    ) -> None:
        self.driver = driver
        self.mapping = mapping
        self.database = database
        self.claim_epoch = claim_epoch
        self.node_cypher: dict[str, NodeStatements] = {n.table: node_statements(n) for n in mapping.nodes}
        self.join_cypher: dict[str, JoinStatements] = {j.table: join_statements(j) for j in mapping.joins}
        self.awaiting = Awaiting(mapping) if awaiting else None

    def schema_statements(self) -> list[str]:
        """Uniqueness constraints on every node key (and the epoch node), indexes on join relationships' keys."""
        awaiting = [] if self.awaiting is None else self.awaiting.schema_statements(self.mapping)
        return (
            [constraint_statement(n) for n in self.mapping.nodes]
            + [s.index for s in self.join_cypher.values()]
            + [EPOCH_CONSTRAINT]
            + awaiting
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

    def write(self, batch: GraphBatch, epoch: int, checkpoint: Checkpoint | None = None) -> dict[str, int]:
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
        checkpoint: Checkpoint | None,
    ) -> dict[str, int]:
        """Write one batch inside `tx` (a managed transaction, or strict mode's explicit one, which it commits)."""
        common: dict[str, Any] = {"epoch": epoch, "synced_at": synced_at}
        if checkpoint is not None and checkpoint.fenced:
            record = tx.run(
                CHECKPOINT_FENCED,
                name=checkpoint.name,
                last_seq=checkpoint.position,
                expected=checkpoint.expected,
                source_ms=checkpoint.source_ms,
                **common,
            ).single()
            if record is None or not record["stored"]:
                raise CheckpointFenced(checkpoint.name, checkpoint.expected)
        if self.claim_epoch:
            claim = tx.run(EPOCH_CLAIM, epoch=epoch).single()
            high = None if claim is None else claim["high"]
            if high is not None and high > epoch:
                raise EpochBehind(epoch, int(high))
        refused: dict[str, int] = {}
        if self.awaiting is not None:
            self._write_awaiting(tx, batch, common, refused)
        else:
            self._write_nodes(tx, batch, common, refused)
            self._write_joins(tx, batch, common, refused)
        if checkpoint is not None and not checkpoint.fenced:
            tx.run(CHECKPOINT, name=checkpoint.name, last_seq=checkpoint.position, **common).consume()
        return refused

    def _write_nodes(
        self, tx: ManagedTransaction | Transaction, batch: GraphBatch, common: dict[str, Any], refused: dict[str, int]
    ) -> None:
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

    def _write_joins(
        self, tx: ManagedTransaction | Transaction, batch: GraphBatch, common: dict[str, Any], refused: dict[str, int]
    ) -> None:
        for table, joins in batch.joins.items():
            clear = [{"key": k, "a": None, "b": None} for k in joins.deletes]
            clear += [{"key": u["key"], "a": u["a"], "b": u["b"]} for u in joins.upserts]
            for clear_rows in chunks(clear):
                record = tx.run(self.join_cypher[table].clear, rows=clear_rows, **common).single()
                _count(refused, joins.table.type, 0 if record is None else int(record["refused"]))
            for join_rows in chunks(joins.upserts):
                record = tx.run(self.join_cypher[table].upsert, rows=join_rows, **common).single()
                _count(refused, joins.table.type, len(join_rows) - (0 if record is None else int(record["applied"])))

    def _write_awaiting(
        self, tx: ManagedTransaction | Transaction, batch: GraphBatch, common: dict[str, Any], refused: dict[str, int]
    ) -> None:
        """Rows with their own versions, endpoints that may be missing: nodes first (deletes, upserts, then the
        relationships that waited for the upserted nodes), then each node's foreign-key relationships and the join
        tables' relationships, waiting where an end is missing."""
        awaiting = self.awaiting
        assert awaiting is not None
        # Resolving costs a statement per definition and chunk: skip it when nothing waits (a count from the count
        # store). A relationship that starts waiting while this transaction creates its end is left to `sweep`.
        counted = tx.run(PENDING_COUNT).single()
        anything_waits = counted is not None and int(counted["c"]) > 0
        for table, writes in batch.nodes.items():
            node = writes.table
            deletes: list[dict[str, Any]] = [
                {"k": k, "v": v} for k, v in zip(writes.deletes, writes.delete_versions, strict=True)
            ]
            for rows in chunks(deletes):
                # Relationships into the nodes about to go wait for them to come back (a key change: the new node
                # may be in this batch, in a later one, or already here).
                waits: dict[str, list[str]] = {}
                incomings = awaiting.incoming.get(node.label, [])
                if incomings:
                    tx.run(awaiting.locks[table], rows=rows).consume()
                for incoming in incomings:
                    records = tx.run(incoming.statement, rows=rows).data()
                    if records:
                        pending, tokens = awaiting.waiting_rows(incoming, records)
                        params = {"rows": pending, "def": incoming.definition}
                        tx.run(awaiting.wait_statement(incoming), params).consume()
                        waits.setdefault(incoming.definition, []).extend(tokens)
                record = tx.run(awaiting.deletes[table], rows=rows, **common).single()
                _count(refused, node.label, 0 if record is None else int(record["refused"]))
                if table in awaiting.owners:
                    owners = [{"o": awaiting.owner_token(node, r["k"]), "v": r["v"]} for r in rows]
                    tx.run(awaiting.forget_owned, rows=owners, **common).consume()
                for definition, tokens in waits.items():
                    # Once each: a pending relationship resolved for a token's first copy is gone for its second.
                    params = {"tokens": list(dict.fromkeys(tokens)), "def": definition, **common}
                    tx.run(awaiting.resolve_statement[definition], params).consume()
        for table, writes in batch.nodes.items():
            node = writes.table
            for upserts in chunks(writes.upserts):
                rows = epoch_rows(upserts, node.epoch_props)
                record = tx.run(awaiting.upserts[table], rows=rows, cut=node.label, **common).single()
                _count(refused, node.label, len(rows) - (0 if record is None else int(record["applied"])))
                by_definition = awaiting.upsert_tokens(node, upserts) if anything_waits else {}
                for resolver in awaiting.resolvers.get(node.label, []):
                    found = list(dict.fromkeys(by_definition.get(resolver.definition, [])))
                    if found:
                        tx.run(resolver.statement, {"tokens": found, "def": resolver.definition, **common}).consume()
        for table, writes in batch.nodes.items():
            for plan, links in zip(awaiting.links[table], writes.links, strict=True):
                for link_rows in chunks(links):
                    rows = awaiting.link_rows(writes.table, plan, link_rows)
                    tx.run(plan.statements.write, {"rows": rows, "def": plan.definition, **common}).consume()
        for table, joins in batch.joins.items():
            jplan = awaiting.joins[table]
            params = {"def": jplan.definition, "cut": joins.table.type, **common}
            clear: list[dict[str, Any]] = [
                {"key": k, "a": None, "b": None, "v": v}
                for k, v in zip(joins.deletes, joins.delete_versions, strict=True)
            ]
            clear += [{"key": u["key"], "a": u["a"], "b": u["b"], "v": u["v"]} for u in joins.upserts]
            for clear_rows in chunks(clear):
                # Forget, clear, forget again: the first waits out a concurrent resolve of the row's pending
                # relationship (so the clear then sees the relationship it made); the second removes one that a
                # concurrent delete of an end node made of the relationship while the clear waited for that node.
                tx.run(jplan.statements.forget, {"rows": clear_rows, **params}).consume()
                record = tx.run(awaiting.clears[table], {"rows": clear_rows, **params}).single()
                _count(refused, joins.table.type, 0 if record is None else int(record["refused"]))
                tx.run(jplan.statements.forget, {"rows": clear_rows, **params}).consume()
            for join_rows in chunks(joins.upserts):
                sent = awaiting.join_rows(jplan, join_rows)
                record = tx.run(jplan.statements.upsert, {"rows": sent, **params}).single()
                _count(refused, joins.table.type, len(sent) - (0 if record is None else int(record["applied"])))

    def sweep(self) -> int:
        """Turn every waiting relationship whose end nodes exist into the relationship (see `awaiting`); returns how
        many were waiting before."""
        assert self.awaiting is not None
        sweeps = self.awaiting.sweeps
        with self.driver.session(database=self.database) as session:
            record = session.run(PENDING_COUNT).single()
            waiting = 0 if record is None else int(record["c"])
            if waiting:
                synced_at = dt.datetime.now(dt.UTC)
                for definition, statement in sweeps.items():
                    params = {"def": definition, "synced_at": synced_at}
                    session.execute_write(_run_one, statement, params)
        return waiting

    def raise_epoch_mark(self, epoch: int) -> None:
        """Move the graph's epoch mark up to `epoch` (never down), alone in a transaction."""
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: tx.run(EPOCH_CLAIM, epoch=epoch).consume())

    def probe(self) -> None:
        """A write transaction that touches no data: succeeds when Neo4j takes writes (tells a row's failure from
        the server's)."""
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: tx.run(PING).consume())

    def truncate_up_to(self, table: str, epoch: int) -> None:
        """A TRUNCATE at `epoch` from a source whose tables arrive independently: marks the label or type so that
        older rows arriving later are dropped, then deletes the rows written up to it (in chunks), and the pending
        relationships of its definitions. Repeating it does no harm."""
        assert self.awaiting is not None
        cut, statement, prefix = self.awaiting.truncates[table]
        mark, pending = self.awaiting.truncate_mark, self.awaiting.truncate_pending
        with self.driver.session(database=self.database) as session:
            session.execute_write(lambda tx: tx.run(mark, cut=cut, epoch=epoch).consume())
            session.run(statement, epoch=epoch).consume()
            session.run(pending, prefix=prefix, epoch=epoch).consume()

    def truncate(self, table: str) -> None:
        """Empty a label or relationship type (auto-commit, in chunks: `CALL {} IN TRANSACTIONS`)."""
        statement = self.node_cypher[table].truncate if table in self.node_cypher else self.join_cypher[table].truncate
        with self.driver.session(database=self.database) as session:
            session.run(statement).consume()


def _run_one(tx: ManagedTransaction, statement: str, params: dict[str, Any]) -> None:
    tx.run(statement, params).consume()


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
        rows.append({**upsert, "p": sent, "e": epochs})
    return rows
