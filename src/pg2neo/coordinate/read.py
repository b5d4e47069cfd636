"""Strict mode's PostgreSQL read in two round trips: the apply lock, the epoch and the transaction's own changes; then
the rows of the changed keys.

Place in the data flow: the PostgreSQL half of a strict commit's read (coordinate/strict.py), in the application's
transaction, which waits for every round trip with its row locks held (and, from the first one on, the apply lock).
Read one statement at a time, it took 3 + one per changed table round trips; here it is two pipelines (psycopg 3
`Connection.pipeline()`: the statements go out together and the results come back after one sync):

  1. `set_config(..., true)` for every pinned setting (the same as `SET LOCAL`, capture/session.py), the apply lock
     (`pg_advisory_xact_lock`) and a new epoch, in one statement; then the changes the transaction queued;
  2. the current rows of every changed table's keys, one by-key query per table (apply/reader.py, as the applier
     reads them), with the out-of-range date loaders (`LENIENT_LOADERS`) on each cursor.

A pipeline runs its statements in order in the one session, each as if sent alone: the settings are in place before
any key is printed or cast, and the rows are read after the lock is granted (under READ COMMITTED each statement takes
its snapshot when it starts), so a strict read is still ordered with every applier batch by the lock, and its epoch
(taken under the lock) with theirs. In one statement the target list runs left to right: the settings, then the lock,
then the epoch. A failure anywhere surfaces when the pipeline ends; the transaction is then aborted and the caller
rolls it back.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import psycopg

from pg2neo.apply.core import Entry, Key, ReadRow
from pg2neo.apply.reader import by_keys_query
from pg2neo.capture.session import LENIENT_LOADERS, PIN_FOR_TRANSACTION
from pg2neo.mapping.plan import Mapping
from pg2neo.transport.queue import OWN_CHANGES_SQL, change_of
from pg2neo.transport.schema import APPLY_LOCK_KEY
from pg2neo.transport.source import Change

# One statement (a pipeline sends each statement on its own): the settings, then the lock, then the epoch.
_PIN_LOCK_EPOCH = f"SELECT {PIN_FOR_TRANSACTION}, pg_advisory_xact_lock(%s), nextval('pg2neo.epoch')"


def _pipeline(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """A pipeline where libpq has them (14 and later); else the statements go one by one, with the same results."""
    return conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()


def lock_epoch_and_own_changes(conn: psycopg.Connection[Any]) -> tuple[int, list[Change]]:
    """Pin the key-printing settings for the transaction, take the apply lock for it (released at its end; a
    prepared transaction keeps it) and a new epoch, and read the changes the transaction queued, in one round trip."""
    with conn.cursor() as taken, conn.cursor() as own:
        with _pipeline(conn):
            taken.execute(_PIN_LOCK_EPOCH, (APPLY_LOCK_KEY,))
            own.execute(OWN_CHANGES_SQL)
        row = taken.fetchone()
        assert row is not None
        changes = [change_of(r) for r in own]
    return int(row[-1]), changes


class RowReader:
    """Reads the current rows of several tables' keys in one round trip (a gone row is a delete), with the same
    queries and results as `KeyReader.fetch` table by table; any failure stands (strict mode then rolls back)."""

    def __init__(self, mapping: Mapping) -> None:
        self._by_keys = {e.table: by_keys_query(mapping, e).as_bytes() for e in mapping.entries}

    def fetch(self, conn: psycopg.Connection[Any], wanted: list[tuple[Entry, list[Key]]]) -> list[ReadRow]:
        cursors = [conn.cursor() for _ in wanted]
        try:
            for cur in cursors:
                for name, loader in LENIENT_LOADERS.items():
                    cur.adapters.register_loader(name, loader)
            with _pipeline(conn):
                for cur, (entry, keys) in zip(cursors, wanted, strict=True):
                    columns = [[k[i] for k in keys] for i in range(len(entry.key_columns))]
                    cur.execute(self._by_keys[entry.table], columns)
            reads: list[ReadRow] = []
            for cur, (entry, keys) in zip(cursors, wanted, strict=True):
                found = [tuple(r) for r in cur.fetchall()]
                present = {tuple(row[0]) for row in found}
                reads += [ReadRow(entry, tuple(row[0]), row) for row in found]
                reads += [ReadRow(entry, k, None) for k in keys if k not in present]
            return reads
        finally:
            for cur in cursors:
                cur.close()


__all__ = ["RowReader", "lock_epoch_and_own_changes"]
