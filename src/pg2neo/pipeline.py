"""The assembled pipeline: what the CLI, the tests and the bench build instead of wiring it by hand.

A `Pipeline` holds the settings, the PostgreSQL address, the Neo4j driver and database, and the mapping checked
against the live catalog; it builds the apply `Engine` and the strict-mode `StrictCoordinator` over them, and, as a
context manager, closes what it opened (its engines, its PostgreSQL session, and the driver when it made it).

    with Pipeline.open(load_settings(), check_installed=True) as pipeline:
        run_service(pipeline.engine(), ...)
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import Any

import psycopg
from neo4j import Driver

from pg2neo.apply.engine import Engine
from pg2neo.coordinate import StrictCoordinator, StrictSettings
from pg2neo.coordinate.strict import StepHook
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import resolve
from pg2neo.settings import Settings


class Pipeline:
    """One PostgreSQL database synced to one Neo4j database under one mapping.

    Built from its parts (it then closes only what it opens itself: the engines and the PostgreSQL session it was
    asked for), or by `Pipeline.open` from the settings alone."""

    def __init__(
        self, settings: Settings, pg_dsn: str, driver: Driver, mapping: Mapping, database: str = "neo4j"
    ) -> None:
        self.settings = settings
        self.pg_dsn = pg_dsn
        self.driver = driver
        self.mapping = mapping
        self.database = database
        self._conn: psycopg.Connection[Any] | None = None
        self._closing = ExitStack()

    @classmethod
    def open(cls, settings: Settings, check_installed: bool = False) -> Pipeline:
        """Resolve the servers, refuse a wrong Neo4j login, load the mapping against the catalog and, with
        `check_installed`, check that `pg2neo init` installed it; everything opened is closed again on failure."""
        connections = resolve(settings)
        with ExitStack() as opened:
            driver = connections.driver()
            opened.callback(driver.close)
            # A wrong Neo4j password is refused before anything is done, not after `init` changed PostgreSQL.
            connections.check_neo4j_login(driver)
            conn = psycopg.connect(connections.pg_dsn, autocommit=True)
            opened.callback(conn.close)
            mapping = load_mapping(settings.mapping, conn)
            if check_installed:
                install.check_installed(conn, mapping)
            pipeline = cls(settings, connections.pg_dsn, driver, mapping, connections.neo4j_database)
            pipeline._conn = conn
            pipeline._closing.push(opened.pop_all())
        return pipeline

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """A PostgreSQL session (autocommit) for the commands' own reads and writes; opened on first use."""
        if self._conn is None:
            self._conn = psycopg.connect(self.pg_dsn, autocommit=True)
            self._closing.callback(self._conn.close)
        return self._conn

    def engine(self) -> Engine:
        """A new apply engine (queue batches, snapshot pages) under the apply settings; closed with the pipeline."""
        engine = Engine(self.pg_dsn, self.driver, self.mapping, self.settings.apply, self.database)
        self._closing.callback(engine.close)
        return engine

    def strict(self, on_step: StepHook | None = None) -> StrictCoordinator:
        """A strict-mode coordinator whose prepared transactions recovery settles after `check.prepared_timeout`;
        `on_step` is called at each step of a commit (the bench times the phases with it)."""
        strict = StrictSettings(prepared_timeout=self.settings.check.prepared_timeout)
        return StrictCoordinator(self.driver, self.mapping, strict, self.database, on_step)

    def close(self) -> None:
        self._closing.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
