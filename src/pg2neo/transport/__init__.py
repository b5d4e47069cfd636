"""Transport: the pg2neo schema in PostgreSQL and the changes that travel through it from capture to the applier.

This package owns the `pg2neo` schema — its DDL and every query on its tables — behind named functions; no other
package writes SQL against those tables. Capture (below) only generates the triggers that fill the queue.

- `schema`: the DDL (tables, the `epoch` sequence, the own-write registry), the service-role grants, the apply lock
  (`APPLY_LOCK_KEY`, `apply_lock`) and `mark_own_write`.
- `queue`: `pg2neo.changes` — claim and acknowledge changes, queue keys, the queue's depth and lag.
- `source`: the change-source seam (`ChangeSource`, `ChangeBatch`); the outbox queue is its first implementation.
- `dead_letters`: `pg2neo.dead_letters` — record, clear, list, retry and drop.
- `audit`: `pg2neo.audit` — one row per batch, pruning, the figures `status` and the console show.
- `progress`: `pg2neo.snapshot_progress` — each table's snapshot position.
- `epoch`: `pg2neo.epoch` — the next epoch, and moving it past the graph's highest.
- `state`: `pg2neo.state` — the installed mapping, service roles, heartbeats, drift and schema-change records.
- `conflicts`: `pg2neo.conflicts` — conflicts found by reconcile and their resolution.
"""
