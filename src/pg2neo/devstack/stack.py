"""The embedded local stack: one PostgreSQL and one Neo4j, under one state folder, on free ports.

Used alike by `make demo`, the integration tests and the benchmarks. Ports are chosen once and remembered in
`<state>/stack.json`; a port found taken by a foreign process at the next `up` is replaced by a free one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pg2neo.devstack.neo4j import APOC_VERSION, NEO4J_VERSION, LocalNeo4j
from pg2neo.devstack.postgres import LocalPostgres
from pg2neo.devstack.process import free_port, port_is_free
from pg2neo.settings import DevSettings


@dataclass(frozen=True)
class StackInfo:
    pg_dsn: str
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str


class LocalStack:
    def __init__(self, dev: DevSettings) -> None:
        self.dev = dev
        self.state_dir = dev.state_dir.resolve()
        self.ports = self._load_ports()

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    def _load_ports(self) -> dict[str, int]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
            return {"pg": int(data["pg_port"]), "bolt": int(data["bolt_port"])}
        except (OSError, ValueError, KeyError):
            return {}

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        info = self.info()
        doc = {
            "pg_port": self.ports["pg"],
            "bolt_port": self.ports["bolt"],
            "pg_dsn": info.pg_dsn,
            "neo4j_uri": info.neo4j_uri,
        }
        self.state_file.write_text(json.dumps(doc, indent=2) + "\n")

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.state_dir / "postgres", self.ports["pg"], self.dev.pg_shared_buffers)

    @property
    def neo4j(self) -> LocalNeo4j:
        return LocalNeo4j(
            self.state_dir / "neo4j",
            self.dev.cache_dir,
            self.ports["bolt"],
            self.dev.neo4j_heap,
            self.dev.neo4j_pagecache,
        )

    def _choose_ports(self) -> None:
        if "pg" not in self.ports:
            self.ports = {"pg": free_port(), "bolt": free_port()}
            while self.ports["bolt"] == self.ports["pg"]:
                self.ports["bolt"] = free_port()
        if not self.postgres.running() and not port_is_free(self.ports["pg"]):
            self.ports["pg"] = free_port()
        if self.neo4j.running_pid() is None and not port_is_free(self.ports["bolt"]):
            self.ports["bolt"] = free_port()
        self._save()

    def up(self) -> dict[str, float]:
        """Start both servers (each only if not running) and return the seconds each took to be ready."""
        self._choose_ports()
        timings: dict[str, float] = {}
        started = time.monotonic()
        self.postgres.start()
        timings["postgres"] = time.monotonic() - started
        started = time.monotonic()
        self.neo4j.start()
        timings["neo4j"] = time.monotonic() - started
        return timings

    def down(self) -> None:
        if not self.ports:
            return
        self.neo4j.stop()
        self.postgres.stop()

    def info(self) -> StackInfo:
        return StackInfo(
            pg_dsn=self.postgres.dsn,
            neo4j_uri=self.neo4j.uri,
            neo4j_user="neo4j",
            neo4j_password=self.neo4j.password,
        )

    def status(self) -> dict[str, Any]:
        if not self.ports:
            return {"state_dir": str(self.state_dir), "postgres": {"up": False}, "neo4j": {"up": False}}
        pg, neo = self.postgres, self.neo4j
        return {
            "state_dir": str(self.state_dir),
            "postgres": {
                "up": pg.running(),
                "version": pg.version(),
                "port": pg.port,
                "data": str(pg.data_dir),
                "dsn": pg.dsn,
            },
            "neo4j": {
                "up": neo.running_pid() is not None,
                "version": NEO4J_VERSION,
                "apoc": APOC_VERSION,
                "bolt_port": neo.bolt_port,
                "uri": neo.uri,
                "data": str(neo.root / "data"),
                "password_file": str(neo.password_file),
            },
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.info())
