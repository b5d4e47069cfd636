"""Where the two servers are: explicit settings first, else the embedded local stack's state.

The connection settings are checked here, once, before any command opens a connection: a DSN libpq cannot read
and a Neo4j URI the driver refuses become a `ConfigError` that names the variable and never quotes the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from neo4j import Driver, GraphDatabase
from neo4j.exceptions import AuthError, ConfigurationError, DriverError, Neo4jError

from pg2neo import logs
from pg2neo.errors import ConfigError
from pg2neo.settings import Settings, dsn_passwords


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
        try:
            # The driver retries a failed transaction by itself for 30 s by default, unseen by the service's retry
            # loop (and its metrics and state); 5 s covers a deadlock or a leader switch.
            return GraphDatabase.driver(
                self.neo4j_uri,
                auth=(self.neo4j_user, self.neo4j_password),
                notifications_min_severity="OFF",
                max_transaction_retry_time=5.0,
            )
        except (ConfigurationError, ValueError, ImportError) as exc:
            raise ConfigError(
                f"PG2NEO_NEO4J__URI {self.neo4j_uri!r} is not a Neo4j address the driver can use ({exc}); "
                "write it as bolt://host:7687 or neo4j://host:7687"
            ) from None

    def check_neo4j_login(self, driver: Driver) -> None:
        """Refuse a wrong user or password at once, before any work; a server that is away is left to the retries."""
        try:
            accepted = driver.verify_authentication()
        except AuthError:
            accepted = False
        except (DriverError, Neo4jError, OSError):
            return
        if not accepted:
            raise ConfigError(
                f"Neo4j at {self.neo4j_uri} refused the login of user {self.neo4j_user!r}: check "
                "PG2NEO_NEO4J__USER and PG2NEO_NEO4J__PASSWORD"
            )


def check_dsn(dsn: str, source: str = "PG2NEO_PG_DSN") -> None:
    """Raise a `ConfigError` when libpq cannot read `dsn`; its message masks every token libpq quotes."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the offending token, which may be (a piece of) the password.
        first_line = str(exc).strip().splitlines()[0]
        reason = re.sub(r'"([^"]*)"', lambda m: m.group(0) if len(m.group(1)) <= 1 else '"***"', first_line)
        raise ConfigError(
            f"{source} is not a valid PostgreSQL connection string ({reason}). Write it as "
            "postgresql://user:password@host:5432/dbname with special characters of the password percent-encoded "
            "(a space as %20, % as %25, @ as %40), or as key=value pairs with the password in single quotes"
        ) from None
    authority = re.match(r"\s*postgres(?:ql)?://([^/?#]*)", dsn, re.IGNORECASE)
    if authority and authority.group(1).count("@") > 1:
        raise ConfigError(f"{source}: the password holds a raw '@'; percent-encode it as %40")


def resolve(settings: Settings) -> Connections:
    pg_dsn = settings.pg_dsn.get_secret_value() if settings.pg_dsn else None
    uri = settings.neo4j.uri
    password = settings.neo4j.password.get_secret_value() if settings.neo4j.password else None
    if pg_dsn is not None:
        check_dsn(pg_dsn)
    if pg_dsn is None or uri is None or password is None:
        # Imported here: the devstack is only needed when the servers are not configured.
        from pg2neo.devstack.stack import LocalStack

        stack = LocalStack(settings.dev)
        if not stack.ports:
            raise ConfigError(
                "no servers configured: set PG2NEO_PG_DSN, PG2NEO_NEO4J__URI and PG2NEO_NEO4J__PASSWORD, "
                f"or start the embedded local stack with `pg2neo dev up` (state folder {stack.state_dir})"
            )
        local = stack.info()
        pg_dsn = pg_dsn or local.pg_dsn
        if uri is None:
            uri = local.neo4j_uri
            password = password or local.neo4j_password
    if password is None:
        raise ConfigError("PG2NEO_NEO4J__URI is set but PG2NEO_NEO4J__PASSWORD is not")
    for secret in [password, *dsn_passwords(pg_dsn)]:
        logs.add_secret(secret)
    return Connections(pg_dsn, uri, settings.neo4j.user, password, settings.neo4j.database)
