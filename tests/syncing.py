"""Helpers for integration tests that sync a database in-process: drain the queue, load a snapshot."""

from __future__ import annotations

from neo4j import Driver

from pg2neo.mapping.plan import Mapping
from pg2neo.pipeline import Pipeline
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.settings import ApplySettings, Settings


def drain(pg_dsn: str, driver: Driver, mapping: Mapping, batch_rows: int = 5000) -> None:
    """Apply the queue until it is empty, as `pg2neo run --until-empty` does."""
    settings = Settings(apply=ApplySettings(batch_rows=batch_rows))
    with Pipeline(settings, pg_dsn, driver, mapping) as pipeline:
        run_service(pipeline.engine(), Stopper(), 0.05, until_empty=True)


def snapshot(pg_dsn: str, driver: Driver, mapping: Mapping, page_rows: int = 1000) -> None:
    """Load every mapped table's rows, as `pg2neo snapshot` does."""
    settings = Settings(apply=ApplySettings(snapshot_batch_rows=page_rows))
    with Pipeline(settings, pg_dsn, driver, mapping) as pipeline:
        run_snapshot(pipeline.engine(), Stopper(), lambda *_: None)
