"""Schema changes under a running service: noticed within seconds, reported, and never silent.

Capture is triggers, and DDL can take them away or go around them without any error for the application:
`DROP COLUMN ... CASCADE` drops the UPDATE trigger whose WHEN clause names the column, a column added to a table
mapped with `include: all` is not in the running service's mapping, a dropped table leaves its nodes, and
`ATTACH`/`DETACH PARTITION` move rows in or out of a mapped table without one row event.

`SchemaWatch.check()` runs between batches, at most every `interval` seconds, one catalog query for all mapped
tables: whether each exists, its columns (attnum, name, type), pg2neo's capture triggers on it and whether they are
enabled, its partitions, and the mapping fingerprint `pg2neo init` installed. It compares them with what it saw
when the service started. A change that alters what the service must capture raises `SchemaChanged` (the service
stops between batches, exit code 3, queued changes stay queued) after logging `schema_changed`, recording it in
`pg2neo.state` (row `schema_changes`, shown by `pg2neo status`) and setting `pg2neo_schema_changed{table,kind}`.
A column change that leaves the mapping as it was (a column the mapping does not include) is logged and accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from prometheus_client import Gauge

from pg2neo.apply.cypher import delete_label_hint, delete_type_hint
from pg2neo.capture.triggers import TRIGGER_ROW, TRIGGER_TRUNCATE, TRIGGER_UPDATE
from pg2neo.errors import Pg2NeoError, SchemaDriftError
from pg2neo.logs import event, get_logger
from pg2neo.mapping.plan import JoinTable, Mapping, NodeTable
from pg2neo.transport.state import SCHEMA_CHANGES, delete_state, write_state

log = get_logger("schema")

SCHEMA_CHANGED = Gauge(
    "pg2neo_schema_changed", "1 when a mapped table changed under the running service", ["table", "kind"]
)

REQUIRED_TRIGGERS = (TRIGGER_ROW, TRIGGER_UPDATE, TRIGGER_TRUNCATE)

# 'O' fires in origin (normal) sessions, 'A' always; 'R' only in replica sessions and 'D' never.
ENABLED = ("O", "A")

FINGERPRINT = """
SELECT t.tbl,
       c.oid IS NOT NULL,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(a.attnum, a.attname, format_type(a.atttypid, a.atttypmod))
                                  ORDER BY a.attnum), '[]')
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT coalesce(jsonb_object_agg(tg.tgname, tg.tgenabled), '{}')
          FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
         WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal AND pn.nspname = 'pg2neo'),
       (SELECT coalesce(jsonb_agg(x.relid::regclass::text ORDER BY x.relid::regclass::text), '[]')
          FROM pg_partition_tree(c.oid) x WHERE x.relid <> c.oid),
       (SELECT value->>'fingerprint' FROM pg2neo.state WHERE name = 'mapping')
FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(tbl, nsp, rel)
LEFT JOIN pg_namespace n ON n.nspname = t.nsp
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.rel AND c.relkind IN ('r', 'p')
"""


@dataclass(frozen=True)
class TableShape:
    exists: bool
    columns: tuple[tuple[int, str, str], ...]
    triggers: tuple[tuple[str, str], ...]  # (name, tgenabled)
    partitions: tuple[str, ...]


@dataclass(frozen=True)
class SchemaChange:
    table: str
    kind: str  # table_dropped | capture_lost | columns_changed | partitions_changed | mapping_reinstalled
    detail: str
    remedy: str

    def as_dict(self) -> dict[str, str]:
        return {"table": self.table, "kind": self.kind, "detail": self.detail, "remedy": self.remedy}


class SchemaChanged(SchemaDriftError):
    """The running service must stop: a mapped table changed in a way it cannot capture (see `changes`)."""

    def __init__(self, changes: list[SchemaChange]) -> None:
        self.changes = changes
        lines = [f"`{c.table}`: {c.detail}\n    what to do: {c.remedy}" for c in changes]
        super().__init__(
            "the schema of mapped tables changed while `pg2neo run` was running; the service stopped between "
            "batches and queued changes are kept:\n  " + "\n  ".join(lines)
        )


class SchemaWatch:
    def __init__(self, pg_dsn: str, mapping: Mapping, interval: float = 5.0) -> None:
        self.pg_dsn = pg_dsn
        self.mapping = mapping
        self.interval = interval
        self._baseline: dict[str, TableShape] | None = None
        self._installed: str | None = None
        self._last = 0.0
        self._ok_at = time.time()  # the last check that found the capture complete

    def start(self) -> None:
        """Take the baseline; capture that is already missing or disabled stops the service before it starts."""
        shapes, installed = self._read()
        self._baseline, self._installed = shapes, installed
        self._last = time.monotonic()
        changes = [c for table, shape in shapes.items() if (c := self._capture_missing(table, shape, at_start=True))]
        changes += [
            SchemaChange(
                table,
                "table_dropped",
                "the table does not exist",
                _dropped_remedy(self.mapping, table),
            )
            for table, shape in shapes.items()
            if not shape.exists
        ]
        if changes:
            raise self._report(changes)
        self._ok_at = time.time()
        self._clear_record()

    def check(self, force: bool = False) -> None:
        """Compare the catalog with the baseline (at most every `interval` s unless forced); raise SchemaChanged."""
        if self._baseline is None:
            self.start()
            return
        if not force and time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        try:
            shapes, installed = self._read()
        except psycopg.OperationalError:
            return  # PostgreSQL is away: the apply loop waits for it; the next check compares again
        changes: list[SchemaChange] = []
        if installed != self._installed:
            changes.append(
                SchemaChange(
                    "*",
                    "mapping_reinstalled",
                    "`pg2neo init` installed the capture for a different mapping (or `pg2neo uninstall` removed it)",
                    "start `pg2neo run` again, with the mapping file that `pg2neo init` used",
                )
            )
        accepted: dict[str, TableShape] = {}
        for table, shape in shapes.items():
            before = self._baseline[table]
            if shape == before:
                continue
            if not shape.exists:
                changes.append(
                    SchemaChange(
                        table,
                        "table_dropped",
                        "the table was dropped (or renamed)",
                        _dropped_remedy(self.mapping, table),
                    )
                )
                continue
            lost = self._capture_missing(table, shape, at_start=False)
            if lost is not None:
                changes.append(lost)
            if shape.partitions != before.partitions:
                changes.append(_partitions_changed(table, before.partitions, shape.partitions))
            if shape.columns != before.columns:
                column_change = self._columns_changed(table, before.columns, shape.columns)
                if column_change is None:
                    accepted[table] = shape
                else:
                    changes.append(column_change)
            elif lost is None and shape.partitions == before.partitions:
                accepted[table] = shape  # e.g. a trigger re-created by `pg2neo init` with the same mapping
        for table, shape in accepted.items():
            self._baseline[table] = shape
        if changes:
            raise self._report(changes)
        self._ok_at = time.time()

    # -- what changed ---------------------------------------------------------------------------------------------
    def _capture_missing(self, table: str, shape: TableShape, at_start: bool) -> SchemaChange | None:
        if not shape.exists:
            return None
        triggers = dict(shape.triggers)
        missing = [name for name in REQUIRED_TRIGGERS if name not in triggers]
        disabled = [name for name in REQUIRED_TRIGGERS if name in triggers and triggers[name] not in ENABLED]
        if not missing and not disabled:
            return None
        parts = []
        if missing:
            parts.append(f"capture trigger(s) {', '.join(missing)} are gone")
        if disabled:
            parts.append(f"capture trigger(s) {', '.join(disabled)} are disabled")
        when = (
            "before this service started"
            if at_start
            else f"between {time.strftime('%H:%M:%S', time.localtime(self._ok_at))} and now"
        )
        return SchemaChange(
            table,
            "capture_lost",
            f"{' and '.join(parts)} (`DROP COLUMN ... CASCADE` drops the UPDATE trigger that names the column; "
            f"`ALTER TABLE ... DISABLE TRIGGER` disables it). Changes made to `{table}` while it was missing, "
            f"{when}, were NOT queued and are not in Neo4j.",
            f"run `pg2neo init` (re-installs the capture on `{table}`), then "
            "`pg2neo reconcile --policy pg-wins --apply` (or `pg2neo snapshot --restart`) to bring the graph back, "
            "then start `pg2neo run` again",
        )

    def _columns_changed(
        self, table: str, before: tuple[tuple[int, str, str], ...], after: tuple[tuple[int, str, str], ...]
    ) -> SchemaChange | None:
        old = {name: (num, typ) for num, name, typ in before}
        new = {name: (num, typ) for num, name, typ in after}
        parts = []
        if added := [n for n in new if n not in old]:
            parts.append("added " + ", ".join(added))
        if dropped := [n for n in old if n not in new]:
            parts.append("dropped " + ", ".join(dropped))
        if retyped := [f"{n} ({old[n][1]} -> {new[n][1]})" for n in new if n in old and old[n] != new[n]]:
            parts.append("changed " + ", ".join(retyped))
        what = "; ".join(parts) or "column order changed"
        affected, why = self._mapping_affected()
        if not affected:
            event(log, "schema_changed", table=table, kind="columns_changed", change=what, affects_mapping=False)
            return None
        return SchemaChange(
            table,
            "columns_changed",
            f"columns {what}: {why}. Changes applied since were synced with the mapping the service started with.",
            "update the mapping if needed, run `pg2neo init` (re-installs the capture for the new columns), then "
            f"`pg2neo snapshot --restart` (or `pg2neo reconcile --policy pg-wins --apply`) to bring `{table}`'s nodes "
            "up to date, then start `pg2neo run` again",
        )

    def _mapping_affected(self) -> tuple[bool, str]:
        """Resolve the mapping file again against the catalog: does the mapping the service runs still hold?"""
        from pg2neo.mapping.resolve import load_mapping
        from pg2neo.runtime.install import fingerprint

        if not self.mapping.source:
            return True, "the mapping cannot be checked again (it was not loaded from a file)"
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5) as conn:
                fresh = load_mapping(Path(self.mapping.source), conn)
        except Pg2NeoError as exc:
            return True, f"the mapping no longer matches the table: {exc}"
        if fingerprint(fresh) != fingerprint(self.mapping):
            return True, "the mapping now resolves to other columns (e.g. `include: all` takes in the new column)"
        return False, ""

    # -- catalog and records --------------------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, TableShape], str | None]:
        entries = self.mapping.entries
        with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5, application_name="pg2neo-watch") as c:
            try:
                rows = c.execute(
                    FINGERPRINT,
                    ([e.table for e in entries], [e.schema for e in entries], [e.name for e in entries]),
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                return {e.table: self._baseline_or_missing(e) for e in entries}, None
        shapes = {
            str(r[0]): TableShape(
                bool(r[1]),
                tuple((int(a[0]), str(a[1]), str(a[2])) for a in (r[2] or [])),
                tuple(sorted((str(k), str(v)) for k, v in (r[3] or {}).items())),
                tuple(str(p) for p in (r[4] or [])),
            )
            for r in rows
        }
        installed = next((str(r[5]) for r in rows if r[5] is not None), None)
        return shapes, installed

    def _baseline_or_missing(self, entry: NodeTable | JoinTable) -> TableShape:
        if self._baseline is not None:
            return self._baseline[entry.table]
        return TableShape(True, (), (), ())

    def _report(self, changes: list[SchemaChange]) -> SchemaChanged:
        for change in changes:
            event(log, "schema_changed", logging.ERROR, table=change.table, kind=change.kind, detail=change.detail)
            SCHEMA_CHANGED.labels(change.table, change.kind).set(1)
        record = {"at": time.time(), "changes": [c.as_dict() for c in changes]}
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5) as conn:
                write_state(conn, SCHEMA_CHANGES, record)
        except psycopg.Error:
            pass  # the log line and the exit code still say it
        return SchemaChanged(changes)

    def _clear_record(self) -> None:
        """A service that starts on a clean catalog takes the last report away: it was dealt with."""
        try:
            with psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5) as conn:
                delete_state(conn, SCHEMA_CHANGES)
        except psycopg.Error:
            pass


def _partitions_changed(table: str, before: tuple[str, ...], after: tuple[str, ...]) -> SchemaChange:
    parts = []
    if attached := [p for p in after if p not in before]:
        parts.append(
            f"partition(s) {', '.join(attached)} attached: their rows entered `{table}` without insert events and "
            "are NOT in Neo4j"
        )
    if detached := [p for p in before if p not in after]:
        parts.append(
            f"partition(s) {', '.join(detached)} detached: their rows left `{table}` without delete events and their "
            "nodes are STILL in Neo4j"
        )
    return SchemaChange(
        table,
        "partitions_changed",
        "; ".join(parts) + " (partitions attached or detached cannot be captured by triggers)",
        "run `pg2neo init`, then `pg2neo reconcile --policy pg-wins --apply` to add or remove those rows' nodes, "
        "then start `pg2neo run` again",
    )


def _dropped_remedy(mapping: Mapping, table: str) -> str:
    entry = mapping.entry(table)
    if isinstance(entry, NodeTable):
        leftover = f"its nodes (label {entry.labels[0]}) are still in Neo4j"
        cypher = delete_label_hint(entry.labels[0])
    elif isinstance(entry, JoinTable):
        leftover = f"its relationships (type {entry.type}) are still in Neo4j"
        cypher = delete_type_hint(entry.type)
    else:
        leftover, cypher = "its graph is still in Neo4j", ""
    return (
        f"{leftover}. If the table is gone for good, remove it from the mapping, run `pg2neo init`, and delete them "
        f"in Neo4j (`{cypher}`); if it was renamed, update the mapping and run `pg2neo init` and "
        "`pg2neo snapshot --restart`. Then start `pg2neo run` again (its queued changes become dead letters)"
    )
