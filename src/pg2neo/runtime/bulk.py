"""`pg2neo snapshot --bulk`: the initial load of an empty graph through `neo4j-admin database import full`.

Place in the data flow: a one-off replacement for the snapshot pages, with the same handoff to the queue.

1. Under the apply lock (so no `run` applies anything until the load is finished), one REPEATABLE READ
   transaction takes the load's epoch and exports its snapshot (`pg_export_snapshot`), and records which
   transactions it sees (`pg_current_snapshot`).
2. Worker processes read every mapped table in parts with `COPY` from that one snapshot and write import CSV
   (runtime/bulk_export.py, runtime/bulk_csv.py): the properties, hashes and stamps the Bolt writer would write,
   every node and join relationship stamped with the load's epoch.
3. The local stack's Neo4j is stopped, `neo4j-admin database import full` replaces its `neo4j` database, and it is
   started again (for a Neo4j pg2neo does not run, the files and the command are handed to the operator instead, and
   `pg2neo snapshot --bulk-finish` does step 4 once it is imported).
4. The epoch node is seeded with the load's epoch, the constraints and indexes are created, the rows the CSV could
   not carry are written through the Bolt writer with the load's epoch, key-only nodes no relationship needed are
   dropped; then, in one PostgreSQL transaction, the queued changes the snapshot covers are removed
   (`pg_visible_in_snapshot(txid, snapshot)`: a change is queued in its writing transaction, so it is visible
   exactly when its write is), every table is marked loaded, and the dead letters and the audit row are recorded.

So `run` applies exactly the changes committed after the snapshot: those the snapshot saw are in the graph and no
longer queued, the others stay queued, and their epochs are newer than the load's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.batch import RowFailure
from pg2neo.apply.core import Applied, Applier, DeadLetter, Epoch, ReadRow
from pg2neo.apply.cypher import CHECKPOINT_LABEL, EPOCH_LABEL, EPOCH_SEED, VERSION, q
from pg2neo.apply.writer import GraphWriter
from pg2neo.capture.session import prepare_connection
from pg2neo.errors import Pg2NeoError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import Mapping
from pg2neo.runtime.bulk_csv import join_header, link_header, node_header, stub_header
from pg2neo.runtime.bulk_export import ExportPart, PartResult
from pg2neo.transport.audit import AuditEntry, record_batch
from pg2neo.transport.dead_letters import NewDeadLetter, record_dead_letters
from pg2neo.transport.epoch import next_epoch
from pg2neo.transport.progress import write_progress
from pg2neo.transport.schema import apply_lock
from pg2neo.transport.state import delete_state, read_state, write_state

log = get_logger("bulk")

PART_ROWS = 200_000  # rows per export part (a table is split by heap blocks)
ROWS_PER_BLOCK_GUESS = 50
PENDING = "bulk_load"  # pg2neo.state row of a load whose files wait for an operator's import
MANIFEST = "manifest.json"
BOLT_PAGE = 2000


class GraphNotEmpty(Pg2NeoError):
    """The bulk load replaces the whole database: it refuses a graph that holds data."""


@dataclass
class BulkExport:
    """What the export produced: the position, the files and what is left for after the import."""

    out_dir: Path
    epoch: int
    pg_snapshot: str
    synced_at: dt.datetime
    parts: list[PartResult] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self, table: str) -> int:
        return sum(p.rows for p in self.parts if p.table == table)

    @property
    def total_rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def manifest(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "pg_snapshot": self.pg_snapshot,
            "synced_at": self.synced_at.isoformat(),
            "parts": [
                {
                    "table": p.table,
                    "rows": p.rows,
                    "dead": [[f.table, list(f.key), f.reason, f.payload] for f in p.dead],
                    "stub_keys": p.stub_keys,
                    "bolt_file": p.bolt_file,
                }
                for p in self.parts
            ],
        }

    @classmethod
    def from_manifest(cls, out_dir: Path) -> BulkExport:
        doc = json.loads((out_dir / MANIFEST).read_text())
        done = cls(out_dir, int(doc["epoch"]), doc["pg_snapshot"], dt.datetime.fromisoformat(doc["synced_at"]))
        for i, p in enumerate(doc["parts"]):
            part = PartResult(p["table"], i, rows=int(p["rows"]), stub_keys=p["stub_keys"], bolt_file=p["bolt_file"])
            part.dead = [RowFailure(t, tuple(k), reason, payload) for t, k, reason, payload in p["dead"]]
            done.parts.append(part)
        return done


# -- before: the graph must be empty ---------------------------------------------------------------------------------


def graph_contents(driver: Driver, database: str) -> tuple[int, int]:
    """Nodes (other than pg2neo's epoch and checkpoint nodes) and relationships in the graph."""
    own = f"n:{EPOCH_LABEL} OR n:{CHECKPOINT_LABEL}"
    with driver.session(database=database) as session:
        nodes = session.run(f"MATCH (n) WHERE NOT ({own}) RETURN count(n) AS c").single()
        rels = session.run("MATCH ()-[r]->() RETURN count(r) AS c").single()
    return (0 if nodes is None else int(nodes["c"])), (0 if rels is None else int(rels["c"]))


def refuse_non_empty(driver: Driver, database: str) -> None:
    nodes, rels = graph_contents(driver, database)
    if nodes or rels:
        raise GraphNotEmpty(
            f"the graph is not empty ({nodes:,} nodes, {rels:,} relationships): a bulk load replaces the whole "
            f"`{database}` database, so it only loads an empty graph. Run `pg2neo snapshot` (without --bulk) to "
            "load into this graph (it merges, and is resumable), or empty the graph first (delete the database's "
            "files with Neo4j stopped, or `MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS`) and run "
            "`pg2neo snapshot --bulk` again."
        )


def refuse_unsupported(mapping: Mapping) -> None:
    """The import creates one relationship per row and foreign key, where the Bolt writer MERGEs them: equal only
    when no relationship type is drawn by two foreign keys or join tables."""
    drawn = [(rel.type, node.table) for node in mapping.nodes for rel in node.fk_rels]
    drawn += [(join.type, join.table) for join in mapping.joins]
    seen: dict[str, str] = {}
    for rtype, table in drawn:
        if rtype in seen:
            raise Pg2NeoError(
                f"relationship type `{rtype}` is drawn by both `{seen[rtype]}` and `{table}`: the bulk load cannot "
                "reproduce how the writer merges them; use `pg2neo snapshot` without --bulk"
            )
        seen[rtype] = table


# -- export ----------------------------------------------------------------------------------------------------------


def plan_parts(
    conn: psycopg.Connection[Any], mapping: Mapping, dsn: str, snapshot: str, out_dir: Path, epoch: int, at: dt.datetime
) -> list[tuple[float, ExportPart]]:
    """Every table in parts of about PART_ROWS rows by heap block ranges (the last part open-ended), largest first,
    each with its estimated rows."""
    parts: list[tuple[float, ExportPart]] = []
    for entry in mapping.entries:
        row = conn.execute(
            "SELECT c.reltuples, pg_relation_size(c.oid) / current_setting('block_size')::int FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (entry.schema, entry.name),
        ).fetchone()
        tuples, blocks = (float(row[0]), int(row[1])) if row else (0.0, 0)
        if tuples <= 0:  # never analyzed: a guess from its size is enough to split it
            tuples = blocks * ROWS_PER_BLOCK_GUESS
        count = max(1, min(int(tuples // PART_ROWS) + (1 if tuples % PART_ROWS else 0), max(blocks, 1)))
        step = -(-blocks // count) if blocks else 0
        for i in range(count):
            first = None if i == 0 else i * step
            end = None if i == count - 1 else (i + 1) * step
            part = ExportPart(dsn, snapshot, mapping, entry.table, i, first, end, str(out_dir), epoch, at)
            parts.append((tuples / count, part))
    parts.sort(key=lambda p: -p[0])
    return parts


def export(conn: psycopg.Connection[Any], dsn: str, mapping: Mapping, out_dir: Path, jobs: int) -> BulkExport:
    """Export every mapped table from one snapshot (the caller holds the apply lock on `conn`)."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("*.csv"), *out_dir.glob("*.pickle")]:
        old.unlink()
    synced_at = dt.datetime.now(dt.UTC)
    with conn.transaction():
        epoch = next_epoch(conn)  # the first statement: the snapshot is taken here, the epoch inside it
        row = conn.execute("SELECT pg_export_snapshot(), pg_current_snapshot()::text").fetchone()
        assert row is not None
        snapshot, pg_snapshot = str(row[0]), str(row[1])
        parts = plan_parts(conn, mapping, dsn, snapshot, out_dir, epoch, synced_at)
        results = run_workers(parts, jobs)
    done = BulkExport(out_dir, epoch, pg_snapshot, synced_at, results, time.monotonic() - started)
    _write_headers(mapping, out_dir)
    (out_dir / MANIFEST).write_text(json.dumps(done.manifest(), default=str) + "\n")
    event(log, "bulk_exported", rows=done.total_rows, parts=len(results), seconds=round(done.seconds, 1))
    return done


def run_workers(parts: list[tuple[float, ExportPart]], jobs: int) -> list[PartResult]:
    """Export the parts in `jobs` worker processes (each a share of about equal rows, largest parts first); the
    exporting transaction stays open meanwhile, so that each can import its snapshot."""
    shares: list[tuple[float, list[ExportPart]]] = [(0.0, []) for _ in range(max(1, min(jobs, len(parts))))]
    for rows, part in parts:
        at = min(range(len(shares)), key=lambda i: shares[i][0])
        shares[at] = (shares[at][0] + rows, [*shares[at][1], part])
    workers = [
        (
            subprocess.Popen(
                [sys.executable, "-m", "pg2neo.runtime.bulk_export"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            pickle.dumps(share, protocol=pickle.HIGHEST_PROTOCOL),
        )
        for _, share in shares
    ]
    results: list[PartResult] = []
    failures: list[str] = []
    with ThreadPoolExecutor(len(workers)) as waiting:  # one waits per worker: their pipes are drained at once
        outputs = list(waiting.map(lambda w: w[0].communicate(w[1]), workers))
    for (worker, _), (out, err) in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            failures.append(err.decode(errors="replace").strip()[-2000:])
        else:
            results += pickle.loads(out)  # from our own worker process
    if failures:
        raise Pg2NeoError("the bulk export failed (nothing was imported):\n" + "\n".join(failures))
    return results


def _header_path(out_dir: Path, kind: str, index: int) -> Path:
    return out_dir / f"header-{kind}-{index}.csv"


def _write_headers(mapping: Mapping, out_dir: Path) -> None:
    for node in mapping.nodes:
        index = mapping.tables.index(node.table)
        _header_path(out_dir, "nodes", index).write_text(node_header(node))
        _header_path(out_dir, "stubs", index).write_text(stub_header(node))
        for at, rel in enumerate(node.fk_rels):
            ends = (node.table, rel.target_table) if rel.direction == "out" else (rel.target_table, node.table)
            _header_path(out_dir, f"link{at}", index).write_text(link_header(*ends))
    for join in mapping.joins:
        _header_path(out_dir, "rels", mapping.tables.index(join.table)).write_text(join_header(join))


def import_arguments(mapping: Mapping, done: BulkExport, database: str) -> list[str]:
    """The arguments of `neo4j-admin` for the files of `done` (paths as they are on this machine)."""
    # The database first: every --nodes/--relationships takes the arguments after it as more files.
    args = [
        "database",
        "import",
        "full",
        database,
        "--overwrite-destination=true",
        "--threads=" + str(os.cpu_count() or 2),
    ]
    multiline = sorted({path for p in done.parts for path in p.multiline})
    if multiline:
        # Not the parallel v2 parser with a list of files: it fails on a CR inside a quoted field near the end of its
        # 4 MB read buffer ("found CR outside a text cell", seen at a million rows); v1 reads such files correctly.
        args.append("--multiline-fields=true")
    args.append(f"--report-file={done.out_dir / 'import.report'}")

    def files(kind: str, table: str) -> list[str]:
        return [p.files[kind] for p in done.parts if p.table == table and kind in p.files]

    for node in mapping.nodes:
        index = mapping.tables.index(node.table)
        labels = ":".join(node.labels)
        for kind, group in (("nodes", labels), ("stubs", node.label)):
            data = files(kind, node.table)
            if data:
                args.append(f"--nodes={group}=" + ",".join([str(_header_path(done.out_dir, kind, index)), *data]))
        for at, rel in enumerate(node.fk_rels):
            data = files(f"link{at}", node.table)
            if data:
                header = str(_header_path(done.out_dir, f"link{at}", index))
                args.append(f"--relationships={rel.type}=" + ",".join([header, *data]))
    for join in mapping.joins:
        data = files("rels", join.table)
        if data:
            header = str(_header_path(done.out_dir, "rels", mapping.tables.index(join.table)))
            args.append(f"--relationships={join.type}=" + ",".join([header, *data]))
    return args


# -- after the import ------------------------------------------------------------------------------------------------


def finish(conn: psycopg.Connection[Any], driver: Driver, mapping: Mapping, done: BulkExport, database: str) -> int:
    """Make the imported graph the one `run` continues from (the caller holds the apply lock); returns the changes
    the snapshot covered, removed from the queue."""
    started = time.monotonic()
    writer = GraphWriter(driver, mapping, database)
    with driver.session(database=database) as session:
        # A managed transaction: after the restart the driver's pooled connections are stale, and it retries.
        session.execute_write(lambda tx: tx.run(EPOCH_SEED, high=done.epoch).consume())
    writer.ensure_schema()
    dead = [DeadLetter(f, "UnstorableValue") for p in done.parts for f in p.dead]
    dead += _write_bolt_rows(mapping, writer, done)
    _drop_unneeded_stubs(driver, mapping, done, database)
    with conn.transaction():
        covered = conn.execute(
            "DELETE FROM pg2neo.changes WHERE pg_visible_in_snapshot(txid, %s::pg_snapshot)", (done.pg_snapshot,)
        ).rowcount
        for entry in mapping.entries:
            write_progress(conn, entry.table, None, done.rows(entry.table), True)
        if dead:
            record_dead_letters(
                conn,
                [
                    NewDeadLetter(
                        d.failure.table, d.failure.key, "U", d.error_class, d.failure.reason, d.failure.payload
                    )
                    for d in dead
                ],
            )
        record_batch(
            conn,
            AuditEntry(
                kind="snapshot",
                duration_seconds=done.seconds + time.monotonic() - started,
                first_seq=None,
                last_seq=None,
                events=done.total_rows,
                counts={"bulk_rows": done.total_rows, "covered_changes": covered, "dead_letters": len(dead)},
                attempts=1,
                outcome="applied_with_dead_letters" if dead else "applied",
                epoch=done.epoch,
            ),
        )
        write_state(conn, "bulk_snapshot", {"pg_snapshot": done.pg_snapshot, "epoch": done.epoch})
        delete_state(conn, PENDING)
    event(log, "bulk_finished", rows=done.total_rows, covered_changes=covered, dead_letters=len(dead))
    return covered


def _write_bolt_rows(mapping: Mapping, writer: GraphWriter, done: BulkExport) -> list[DeadLetter]:
    """The rows the CSV could not carry, as the snapshot read them, through the Bolt writer with the load's epoch."""
    applier = Applier(mapping, writer)
    dead: list[DeadLetter] = []
    for part in done.parts:
        if part.bolt_file is None:
            continue
        reads: list[ReadRow] = pickle.loads(Path(part.bolt_file).read_bytes())  # our own file, written by the export
        for at in range(0, len(reads), BOLT_PAGE):
            applied: Applied = applier.write(reads[at : at + BOLT_PAGE], Epoch(done.epoch))
            dead += applied.dead
    return dead


def _drop_unneeded_stubs(driver: Driver, mapping: Mapping, done: BulkExport, database: str) -> None:
    """Key-only nodes of dead-letter rows stay only where a relationship needs them (as the writer's MERGE does)."""
    for node in mapping.nodes:
        keys = [k for p in done.parts if p.table == node.table for k in p.stub_keys]
        if not keys:
            continue
        match = "{" + ", ".join(f"{q(p)}: k[{i}]" for i, p in enumerate(node.key_props)) + "}"
        with driver.session(database=database) as session:
            session.run(
                f"UNWIND $keys AS k MATCH (n:{q(node.label)} {match}) "
                f"WHERE n.{VERSION} IS NULL AND NOT (n)--() DELETE n",
                keys=keys,
            ).consume()


# -- the whole load --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkOutcome:
    rows: int
    covered_changes: int
    export_seconds: float
    import_seconds: float
    finish_seconds: float
    command: list[str] | None = None  # when the operator runs the import


def lock_connection(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True, application_name="pg2neo-bulk")
    prepare_connection(conn)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


def bulk_load(
    dsn: str,
    driver: Driver,
    mapping: Mapping,
    database: str,
    out_dir: Path,
    jobs: int,
    local_import: Callable[[list[str]], object] | None,
) -> BulkOutcome:
    """The whole load. With `local_import` (runs `neo4j-admin` with these arguments on the stopped local Neo4j and
    starts it again: devstack/neo4j.py), import and finish now; else leave the files and the command for the
    operator, who finishes with `pg2neo snapshot --bulk-finish`."""
    refuse_unsupported(mapping)
    refuse_non_empty(driver, database)  # before any work; again under the lock, before the export
    with lock_connection(dsn) as conn, apply_lock(conn):
        refuse_non_empty(driver, database)
        done = export(conn, dsn, mapping, out_dir.resolve(), jobs)
        args = import_arguments(mapping, done, database)
        with conn.transaction():  # a crash from here on is finished by `pg2neo snapshot --bulk-finish`
            write_state(conn, PENDING, {"out_dir": str(done.out_dir), "epoch": done.epoch})
        if local_import is None:
            return BulkOutcome(done.total_rows, 0, done.seconds, 0.0, 0.0, ["neo4j-admin", *args])
        started = time.monotonic()
        local_import(args)
        imported = time.monotonic() - started
        started = time.monotonic()
        covered = finish(conn, driver, mapping, done, database)
        return BulkOutcome(done.total_rows, covered, done.seconds, imported, time.monotonic() - started)


def bulk_finish(dsn: str, driver: Driver, mapping: Mapping, database: str, out_dir: Path | None) -> int:
    """After the operator imported the files: finish the load (`pg2neo snapshot --bulk-finish`)."""
    with lock_connection(dsn) as conn, apply_lock(conn):
        pending = read_state(conn, PENDING)
        folder = out_dir or (Path(pending["out_dir"]) if pending else None)
        if folder is None or not (folder / MANIFEST).exists():
            raise Pg2NeoError(
                "no bulk load waits to be finished here: run `pg2neo snapshot --bulk` first (or give its --bulk-dir)"
            )
        done = BulkExport.from_manifest(folder)
        applied_since = conn.execute(
            "SELECT count(*) FROM pg2neo.audit WHERE kind = 'changes' AND epoch > %s", (done.epoch,)
        ).fetchone()
        if applied_since and applied_since[0]:
            event(
                log,
                "bulk_changes_applied_meanwhile",
                logging.WARNING,
                batches=int(applied_since[0]),
                why="`pg2neo run` applied changes between the export and the import; run `pg2neo verify`",
            )
        return finish(conn, driver, mapping, done, database)
