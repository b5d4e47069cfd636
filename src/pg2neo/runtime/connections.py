"""Where the two servers are: explicit settings first, else the embedded local stack's state."""

from __future__ import annotations

import json
from dataclasses import dataclass

from neo4j import Driver, GraphDatabase

from pg2neo.errors import ConfigError
from pg2neo.settings import Settings


@dataclass(frozen=True)
class Connections:
    pg_dsn: str
    neo4j_uri: str
    neo4j_user: str
    neo4j_password: str
    neo4j_database: str = "neo4j"

    def driver(self) -> Driver:
        # Server notifications (e.g. "property key does not exist" for a recovery query on an empty graph) are
        # not for a service's log; errors still raise.
        return GraphDatabase.driver(
            self.neo4j_uri, auth=(self.neo4j_user, self.neo4j_password), notifications_min_severity="OFF"
        )


def resolve(settings: Settings) -> Connections:
    pg_dsn = settings.pg_dsn.get_secret_value() if settings.pg_dsn else None
    uri = settings.neo4j.uri
    password = settings.neo4j.password.get_secret_value() if settings.neo4j.password else None
    if pg_dsn is None or uri is None or password is None:
        state_dir = settings.dev.state_dir.resolve()
        try:
            stack = json.loads((state_dir / "stack.json").read_text())
            local_password = (state_dir / "neo4j" / "password").read_text().strip()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                "no servers configured: set PG2NEO_PG_DSN, PG2NEO_NEO4J__URI and PG2NEO_NEO4J__PASSWORD, "
                f"or start the embedded local stack with `pg2neo dev up` (state folder {state_dir})"
            ) from exc
        pg_dsn = pg_dsn or str(stack["pg_dsn"])
        if uri is None:
            uri = str(stack["neo4j_uri"])
            password = password or local_password
    if password is None:
        raise ConfigError("PG2NEO_NEO4J__URI is set but PG2NEO_NEO4J__PASSWORD is not")
    return Connections(pg_dsn, uri, settings.neo4j.user, password, settings.neo4j.database)
