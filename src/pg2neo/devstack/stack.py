"""The embedded local stack: one PostgreSQL and one Neo4j, under one state folder, on free ports; with `--kafka`
also a Kafka broker and a Kafka Connect worker with the Debezium plugin (`devstack/kafka.py`, under `<state>/kafka`).

Used alike by `make demo`, the integration tests and the benchmarks. Ports are chosen once and remembered in
`<state>/stack.json`; a port found taken by a foreign process at the next `up` is replaced by a free one.
`stack.json` holds no password: each server's password is in its own file, mode 0600.

Where PostgreSQL's files live: PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
account, which must be able to reach its data folder. A clone in root's home folder, or in a `mktemp -d` folder
(mode 0700), is closed to that account, and loosening the modes of a user's folders is not ours to do. So when
`postgres` cannot reach `<state>`, the cluster lives in `/var/lib/pg2neo/postgres-<hash of the state path>`
(owned by `postgres`, mode 0700) and `<state>/postgres` is a symbolic link to it: one cluster per state folder,
found again through the link, removed with the state folder by `make clean`. Otherwise (not root, or a reachable
folder such as the tests' temporary folders) the cluster stays in `<state>/postgres` itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pg2neo.devstack.kafka import LocalKafka
from pg2neo.devstack.neo4j import APOC_VERSION, NEO4J_VERSION, LocalNeo4j
from pg2neo.devstack.postgres import LocalPostgres
from pg2neo.devstack.process import chown_tree, free_port, port_is_free, run_as, service_user
from pg2neo.settings import DevSettings

RELOCATED_HOMES = Path("/var/lib/pg2neo")


def postgres_home(state_dir: Path, user: str | None) -> Path:
    """Where the cluster of `state_dir` lives (see the module docstring); creates nothing."""
    link = state_dir / "postgres"
    if link.is_symlink():
        return link.resolve()
    if user is None or (link / "data" / "PG_VERSION").exists():
        return link
    if run_as(user, ["test", "-x", str(state_dir)]).returncode == 0:
        return link
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return RELOCATED_HOMES / f"postgres-{digest}"


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
        self._postgres_home: Path | None = None

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
            "pg_dsn": self.postgres.dsn_without_password,
            "pg_password_file": str(self.postgres.password_file),
            "neo4j_uri": info.neo4j_uri,
        }
        self.state_file.write_text(json.dumps(doc, indent=2) + "\n")

    @property
    def postgres_home(self) -> Path:
        if self._postgres_home is None:
            self._postgres_home = postgres_home(self.state_dir, service_user())
        return self._postgres_home

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.postgres_home, self.ports["pg"], self.dev.pg_shared_buffers)

    def _link_postgres_home(self) -> None:
        link = self.state_dir / "postgres"
        home = self.postgres_home
        if home == link or link.is_symlink():
            return
        RELOCATED_HOMES.mkdir(mode=0o755, parents=True, exist_ok=True)
        home.mkdir(mode=0o700, exist_ok=True)
        chown_tree(home, service_user())
        if link.exists():  # left by a start that failed on the unreachable folder: no cluster in it
            shutil.rmtree(link)
        link.symlink_to(home, target_is_directory=True)

    def start_postgres(self) -> float:
        """Start PostgreSQL only (ports chosen and remembered as for `up`); returns the seconds it took."""
        self._choose_ports()
        started = time.monotonic()
        self._link_postgres_home()
        self.postgres.start()
        return time.monotonic() - started

    @property
    def neo4j(self) -> LocalNeo4j:
        return LocalNeo4j(
            self.state_dir / "neo4j",
            self.dev.cache_dir,
            self.ports["bolt"],
            self.dev.neo4j_heap,
            self.dev.neo4j_pagecache,
        )

    @property
    def kafka(self) -> LocalKafka:
        """The local Kafka broker + Connect worker of this stack (started only by `up(kafka=True)`)."""
        return LocalKafka(self.state_dir / "kafka", self.dev.cache_dir)

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

    def up(self, kafka: bool = False) -> dict[str, float]:
        """Start both servers, and with `kafka` the Kafka broker and Connect worker (each only if not running);
        return the seconds each took to be ready."""
        timings = {"postgres": self.start_postgres()}
        started = time.monotonic()
        self.neo4j.start()
        timings["neo4j"] = time.monotonic() - started
        if kafka:
            timings.update(self.kafka.up())
        return timings

    def down(self) -> None:
        """Stop every server of the stack that runs, Kafka Connect and the broker first (Connect flushes its
        source offsets to the broker; Debezium's slot is in PostgreSQL)."""
        self.kafka.down()
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
        kafka = self.kafka
        kafka_status = kafka.status() if kafka.ports else None
        if not self.ports:
            return {
                "state_dir": str(self.state_dir),
                "postgres": {"up": False},
                "neo4j": {"up": False},
                "kafka": kafka_status,
            }
        pg, neo = self.postgres, self.neo4j
        return {
            "state_dir": str(self.state_dir),
            "postgres": {
                "up": pg.running(),
                "version": pg.version(),
                "port": pg.port,
                "data": str(pg.data_dir),
                "dsn": pg.dsn_without_password,
                "password_file": str(pg.password_file),
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
            # None when `dev up --kafka` never ran here
            "kafka": kafka_status,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.info())
