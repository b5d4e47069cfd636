"""Runtime: what runs around the apply core — the service loop with retries and graceful stop (`service`),
installing capture and the pg2neo schema (`install`), status and heartbeats (`status`), watching mapped tables for
schema changes (`schema_watch`) and finding the servers (`connections`)."""

from __future__ import annotations

from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service, run_snapshot

__all__ = ["Connections", "Stopper", "run_service", "run_snapshot"]
