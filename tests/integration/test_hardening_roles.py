"""pg2neo in the usual role setup (issue 14, item 3): the tables' owner installs, an application role with only DML
on the tables writes, a least-privilege role runs the service; a role that owns nothing gets a clean `init` error.

Place in the data flow: capture (SECURITY DEFINER triggers, the own-writes registry) and the service commands, end
to end against real PostgreSQL and Neo4j, each role connecting as itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from oracle import NodeSpec, SchemaSpec, assert_graph_matches
from pg2neo.apply.engine import Engine
from pg2neo.cli.main import app
from pg2neo.errors import CaptureError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.runtime.service import Stopper, run_service
from pg2neo.settings import ApplySettings
from pg2neo.transport.schema import mark_own_write
from pg_roles import temporary_roles

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE team (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE person (id integer PRIMARY KEY, name text, score integer);
"""

MAPPING = """
nodes:
  - table: team
    label: Team
  - table: person
    label: Person
"""

SPEC = SchemaSpec(
    nodes=(
        NodeSpec("Team", ("id",), "SELECT id, name FROM team"),
        NodeSpec("Person", ("id",), "SELECT id, name, score FROM person"),
    ),
    rels=(),
)


@dataclass(frozen=True)
class Setup:
    admin_dsn: str  # a superuser, for the oracle and inspection only
    owner: tuple[str, str]  # (role, dsn): owns the tables, runs init
    app: tuple[str, str]  # SELECT/INSERT/UPDATE/DELETE on the tables, nothing else
    service: tuple[str, str]  # granted by init --service-role
    servers: Connections
    mapping_path: Path

    def mapping(self, conn: psycopg.Connection[Any]) -> Mapping:
        return load_mapping(self.mapping_path, conn)

    def cli_env(self, dsn: str) -> dict[str, str]:
        return {
            "PG2NEO_PG_DSN": dsn,
            "PG2NEO_NEO4J__URI": self.servers.neo4j_uri,
            "PG2NEO_NEO4J__USER": self.servers.neo4j_user,
            "PG2NEO_NEO4J__PASSWORD": self.servers.neo4j_password,
            "PG2NEO_MAPPING": str(self.mapping_path),
        }


@pytest.fixture
def setup(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Setup]:
    with temporary_roles(pg_dsn, "owner", "app", "svc") as roles:
        owner, app_role = roles["owner"][0], roles["app"][0]
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(SCHEMA)
            dbname = admin.info.dbname
            admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(*map(sql.Identifier, (dbname, owner))))
            for table in ("team", "person"):
                admin.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(*map(sql.Identifier, (table, owner))))
                admin.execute(
                    sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                        *map(sql.Identifier, (table, app_role))
                    )
                )
        path = tmp_path / "mapping.yaml"
        path.write_text(MAPPING)
        yield Setup(pg_dsn, roles["owner"], roles["app"], roles["svc"], graph, path)


def _install(setup: Setup) -> None:
    with psycopg.connect(setup.owner[1], autocommit=True) as conn, setup.servers.driver() as driver:
        install.init(conn, driver, setup.mapping(conn), service_roles=[setup.service[0]])


def _drain(setup: Setup, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        mapping = setup.mapping(conn)
    with setup.servers.driver() as driver:
        engine = Engine(dsn, driver, mapping, ApplySettings())
        try:
            run_service(engine, Stopper(), 0.05, until_empty=True, schema_interval=None)
        finally:
            engine.close()


def _queued(setup: Setup) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(setup.admin_dsn, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute("SELECT tbl, op::text, key FROM pg2neo.changes ORDER BY seq")]


def _assert_synced(setup: Setup) -> None:
    with psycopg.connect(setup.admin_dsn, autocommit=True) as conn, setup.servers.driver() as driver:
        assert_graph_matches(conn, driver, SPEC)


def test_application_role_with_only_dml_writes_and_is_captured(setup: Setup) -> None:
    _install(setup)
    with psycopg.connect(setup.app[1], autocommit=True) as app_conn:
        app_conn.execute("INSERT INTO team VALUES (1, 'red'), (2, 'blue')")
        app_conn.execute("INSERT INTO person SELECT g, 'p' || g, g FROM generate_series(1, 20) g")
        app_conn.execute("UPDATE person SET score = score * 10 WHERE id <= 5")
        app_conn.execute("DELETE FROM person WHERE id > 15")
        # The setting alone, which any role can set, skips nothing.
        with app_conn.transaction():
            app_conn.execute("SET LOCAL pg2neo.origin = 'pg2neo'")
            app_conn.execute("UPDATE team SET name = 'forged' WHERE id = 1")
            app_conn.execute("INSERT INTO person VALUES (100, 'hidden?', 0)")
        # Nor can it queue an event, or register its transaction as pg2neo's own.
        for forged in (
            "INSERT INTO pg2neo.changes (tbl, op) VALUES ('public.person', 'T')",
            "INSERT INTO pg2neo.own_writes (txid) VALUES (pg_current_xact_id())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app_conn.execute(forged)
    queued = _queued(setup)
    assert ("public.team", "U", ["1"]) in queued and ("public.person", "I", ["100"]) in queued
    _drain(setup, setup.service[1])
    _assert_synced(setup)
    # pg2neo's own write (what a neo4j-wins repair does) is the one that is not queued.
    with psycopg.connect(setup.owner[1], autocommit=True) as owner_conn, owner_conn.transaction():
        mark_own_write(owner_conn)
        owner_conn.execute("UPDATE person SET name = 'repaired' WHERE id = 1")
    assert _queued(setup) == []
    with psycopg.connect(setup.admin_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg2neo.own_writes").fetchone() == (0,)  # forgotten at commit


def test_least_privilege_service_role_runs_the_service_commands(setup: Setup) -> None:
    with psycopg.connect(setup.app[1], autocommit=True) as app_conn:
        app_conn.execute("INSERT INTO team VALUES (1, 'red'), (2, 'blue')")
        app_conn.execute("INSERT INTO person SELECT g, 'p' || g, g FROM generate_series(1, 50) g")
    _install(setup)
    service_role, service_dsn = setup.service
    with psycopg.connect(setup.admin_dsn, autocommit=True) as admin:
        # Least privilege: it owns nothing, may create nothing, may not write the mapped tables.
        assert admin.execute(
            "SELECT has_schema_privilege(%s, 'pg2neo', 'CREATE'), has_database_privilege(%s, current_database(), "
            "'CREATE'), has_table_privilege(%s, 'person', 'UPDATE'), "
            "(SELECT rolsuper OR rolcreaterole OR rolbypassrls FROM pg_roles WHERE rolname = %s)",
            (service_role,) * 4,
        ).fetchone() == (False, False, False, False)
    env = setup.cli_env(service_dsn)
    runner = CliRunner()
    for args in (["snapshot"], ["status"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    with psycopg.connect(setup.app[1], autocommit=True) as app_conn:
        app_conn.execute("UPDATE person SET score = -1 WHERE id % 7 = 0")
        app_conn.execute("DELETE FROM person WHERE id > 40")
        app_conn.execute("INSERT INTO team VALUES (3, 'green')")
    for args in (["run", "--until-empty"], ["verify"], ["status"], ["dlq", "list"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
    _assert_synced(setup)


def test_init_by_a_role_that_does_not_own_the_tables_is_a_clean_error(setup: Setup) -> None:
    owner = setup.owner[0]
    with (
        psycopg.connect(setup.app[1], autocommit=True) as conn,
        setup.servers.driver() as driver,
        pytest.raises(CaptureError) as raised,
    ):
        install.init(conn, driver, setup.mapping(conn))
    message = str(raised.value)
    assert f"{setup.app[0]} does not own" in message and f"Run `pg2neo init` as {owner}" in message
    assert "public.person" in message and "public.team" in message
    result = CliRunner().invoke(app, ["init"], env=setup.cli_env(setup.app[1]))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert owner in result.output and "Traceback" not in result.output
    with psycopg.connect(setup.admin_dsn, autocommit=True) as admin:
        # Stopped before changing anything.
        assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pg2neo'").fetchone() == (0,)
