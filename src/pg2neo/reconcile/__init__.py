"""Reconcile: find drift between PostgreSQL and Neo4j, and settle it.

verify      full scan of both sides, per-bucket digests, drift items          (verify.py)
recent      only what changed or synced lately, and stale syncs             (recent.py, background.py)
counts      nodes and relationships per label and type on both sides        (counts.py)
policies    what one drift item becomes: "pg", "neo4j" or left/recorded     (policies.py)
sides       both sides' current state of drift items                        (sides.py)
writeback   PostgreSQL rewritten from the graph; unmappable items deleted   (writeback.py)
repair      the run: decide, apply (through the apply engine), check, and   (repair.py)
            settle recorded conflicts (their table: transport/conflicts.py)
"""

from __future__ import annotations

from pg2neo.reconcile.background import BackgroundCheck, background_check
from pg2neo.reconcile.policies import POLICIES, Conflict, decider_for
from pg2neo.reconcile.recent import verify_recent
from pg2neo.reconcile.repair import RepairResult, reconcile, resolve_and_record, resolve_conflict
from pg2neo.reconcile.sides import load_conflicts
from pg2neo.reconcile.verify import KINDS, Drift, Scope, VerifyReport, verify

__all__ = [
    "KINDS",
    "POLICIES",
    "BackgroundCheck",
    "Conflict",
    "Drift",
    "RepairResult",
    "Scope",
    "VerifyReport",
    "background_check",
    "decider_for",
    "load_conflicts",
    "reconcile",
    "resolve_and_record",
    "resolve_conflict",
    "verify",
    "verify_recent",
]
