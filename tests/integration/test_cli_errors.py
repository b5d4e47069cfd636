"""The real `pg2neo` command on bad settings, unreachable or refusing servers: one clean line, a documented exit
code, never a traceback or a password; and the minor faces of the CLI (dlq at 80 columns, a second snapshot,
`dev up`).

Place in the data flow: before and beside it — the CLI boundary, run as a subprocess with environment variables,
against the servers of the session fixtures where a server is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg2neo.cli import exits
from pg2neo.devstack.process import free_port
from pg2neo.devstack.stack import LocalStack
from pg2neo.runtime.connections import Connections

pytestmark = pytest.mark.integration

COMMANDS = [
    ["status"],
    ["run", "--until-empty"],
    ["init"],
    ["snapshot"],
    ["verify"],
    ["reconcile"],
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["dlq", "retry", "--all"],
    ["dlq", "drop", "--all"],
    ["uninstall"],
    ["recover"],
    ["conflicts", "list"],
]
SCHEMA = (
    "CREATE TABLE person (id integer PRIMARY KEY, name text); "
    "INSERT INTO person SELECT i, 'p' || i FROM generate_series(1, 30) i"
)
MAPPING = "nodes:\n  - table: person\n    label: Person\n"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PG2NEO_")}
    env.update(settings)
    return env


def pg2neo(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg2neo", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_clean_error(done: subprocess.CompletedProcess[str], secrets: list[str], code: int = exits.ERROR) -> str:
    """Exit `code`, exactly one line on stderr, no traceback, no secret anywhere; returns the line."""
    output = done.stdout + done.stderr
    assert done.returncode == code, f"{done.args}: exit {done.returncode}\n{output[-3000:]}"
    for secret in secrets:
        assert secret not in output, f"{done.args} printed a secret:\n{output[-3000:]}"
    assert "Traceback" not in output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{done.args}: expected one line on stderr:\n{done.stderr[-3000:]}"
    return lines[0]


def run_all(jobs: list[tuple[list[str], dict[str, str]]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda job: pg2neo(*job), jobs))


# -- secrets in settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "json_logs"),
    [
        ("postgresql://u:p%zzsecret-4711@127.0.0.1:1/db", False),
        ("postgresql://u:pa ss-secret-4711@127.0.0.1:1/db", True),
    ],
)
def test_a_bad_dsn_password_never_shows_and_every_command_exits_2(dsn: str, json_logs: bool) -> None:
    env = clean_env(PG2NEO_PG_DSN=dsn, PG2NEO_NEO4J__URI="bolt://127.0.0.1:1", PG2NEO_NEO4J__PASSWORD="neo-4711x")
    flags = ["--log-json"] if json_logs else []
    # Every command once; the JSON variant on a sample, to keep the run short (the handler is shared).
    commands = COMMANDS if not json_logs else [c for c in COMMANDS if c[0] in ("status", "run", "init", "dlq")]
    for command, done in zip(commands, run_all([(flags + c, env) for c in commands]), strict=True):
        line = assert_clean_error(done, ["secret-4711", "neo-4711x"])
        text = json.loads(line)["error"] if json_logs else line
        assert "PG2NEO_PG_DSN" in text and "percent-encode" in text, (command, line)


def test_a_misspelt_variable_is_named_and_its_value_never_shown() -> None:
    env = clean_env(
        PG2NEO_PG_DSN="postgresql://u:x@127.0.0.1:1/db",
        PG2NEO_NEO4J__URI="bolt://127.0.0.1:1",
        PG2NEO_NEO4J__PASWORD="topsecret-4711",
    )
    jobs = [(c, env) for c in (["status"], ["run"], ["verify"], ["dlq", "list"], ["uninstall"], ["dev", "up"])]
    jobs.append((["--log-json", "init"], env))
    for done in run_all(jobs):
        line = assert_clean_error(done, ["topsecret-4711"])
        assert "PG2NEO_NEO4J__PASWORD" in line and "did you mean PG2NEO_NEO4J__PASSWORD?" in line


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    dsn = f"postgresql://app:conn-secret-4711@127.0.0.1:{free_port()}/db"
    env = clean_env(PG2NEO_PG_DSN=dsn, PG2NEO_NEO4J__URI="bolt://127.0.0.1:1", PG2NEO_NEO4J__PASSWORD="neo-4711x")
    jobs = [(c, env) for c in (["status"], ["dlq", "list"], ["uninstall"])]
    jobs.append((["--log-json", "status"], env))
    for done in run_all(jobs):
        line = assert_clean_error(done, ["conn-secret-4711", "neo-4711x"])
        assert "cannot reach PostgreSQL" in line and "PG2NEO_PG_DSN" in line


# -- against the real servers -------------------------------------------------------------------------------


@pytest.fixture
def person_db(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    yield pg_dsn, mapping


def server_env(graph: Connections, pg_dsn: str, mapping: Path, **extra: str) -> dict[str, str]:
    settings = {
        "PG2NEO_PG_DSN": pg_dsn,
        "PG2NEO_NEO4J__URI": graph.neo4j_uri,
        "PG2NEO_NEO4J__PASSWORD": graph.neo4j_password,
        "PG2NEO_MAPPING": str(mapping),
        "PG2NEO_CHECK__ENABLED": "false",
    }
    return clean_env(**{**settings, **extra})


def test_a_wrong_neo4j_password_ends_run_init_verify_with_exit_2(
    person_db: tuple[str, Path], graph: Connections
) -> None:
    pg_dsn, mapping = person_db
    wrong = "wrong-neo4j-4711"
    env = server_env(graph, pg_dsn, mapping, PG2NEO_NEO4J__PASSWORD=wrong)
    with graph.driver() as driver:
        for command in (["init"], ["run", "--until-empty"], ["verify"], ["--log-json", "init"]):
            done = pg2neo(command, env)
            # Neo4j locks a user out after 3 failed logins in a row; a good login resets the count.
            assert driver.verify_authentication()
            line = assert_clean_error(done, [wrong, graph.neo4j_password])
            assert "PG2NEO_NEO4J__PASSWORD" in line and "refused" in line, line
    with psycopg.connect(pg_dsn) as conn:  # refused before `init` touched PostgreSQL
        assert conn.execute("SELECT to_regnamespace('pg2neo')").fetchone() == (None,)


def test_init_by_a_role_that_does_not_own_the_tables_is_a_clean_error(
    person_db: tuple[str, Path], graph: Connections
) -> None:
    pg_dsn, mapping = person_db
    role, password = f"app_{uuid.uuid4().hex[:8]}", "role-secret-4711"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON person TO {}").format(sql.Identifier(role)))
    try:
        role_dsn = psycopg.conninfo.make_conninfo(pg_dsn, user=role, password=password)
        done = pg2neo(["init"], server_env(graph, role_dsn, mapping))
        line = assert_clean_error(done, [password])
        assert "owner" in line or "owns" in line, line
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_second_snapshot_says_how_many_rows_and_how_to_load_again(
    person_db: tuple[str, Path], graph: Connections
) -> None:
    pg_dsn, mapping = person_db
    env = server_env(graph, pg_dsn, mapping)
    for command in (["init"], ["snapshot"]):
        done = pg2neo(command, env)
        assert done.returncode == 0, done.stdout + done.stderr
    again = pg2neo(["snapshot"], env)
    assert again.returncode == 0, again.stdout + again.stderr
    text = " ".join(again.stdout.split())
    assert "snapshot: 0 rows" in text and "already loaded" in text and "30 rows" in text
    assert "pg2neo snapshot --restart" in text


def test_dlq_list_reads_at_80_columns(person_db: tuple[str, Path], graph: Connections) -> None:
    pg_dsn, mapping = person_db
    env = {**server_env(graph, pg_dsn, mapping), "COLUMNS": "80"}
    assert pg2neo(["init"], env).returncode == 0
    reason = "Property value is too large to index, the value of property code is 10000 characters long " * 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pg2neo.dead_letters (tbl, key, op, error_class, message) VALUES "
            "('public.person', ARRAY[repeat('x', 10000)], 'I', 'DatabaseError', %s), "
            "('public.person', ARRAY['7'], 'U', 'TypeError', 'utcoffset(dt) argument must be a datetime')",
            (reason,),
        )
    done = pg2neo(["dlq", "list"], env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    assert any(line.startswith("#1  public.person  I  attempts 1  last failed") for line in lines), done.stdout
    assert any(line.startswith('    key    ["xxxxxxxx') and line.endswith("…") for line in lines), done.stdout
    assert any(line.startswith('    key    ["7"]') for line in lines), done.stdout
    reasons = " ".join(line.strip() for line in lines if line.startswith("    ") and "key " not in line)
    assert "reason DatabaseError: Property value is too large to index" in reasons
    assert "reason TypeError: utcoffset(dt) argument must be a datetime" in reasons
    assert "2 dead letter(s)" in done.stdout


def test_dev_up_and_status_never_print_the_passwords(owned_stack: LocalStack) -> None:
    env = clean_env(PG2NEO_DEV__STATE_DIR=str(owned_stack.state_dir))
    pg_password = owned_stack.postgres.password_file.read_text().strip()
    neo4j_password = owned_stack.neo4j.password
    up = pg2neo(["dev", "up"], env, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    status = pg2neo(["dev", "status", "--json"], env)
    assert status.returncode == 0, status.stderr
    for done in (up, status):
        assert pg_password not in done.stdout + done.stderr
        assert neo4j_password not in done.stdout + done.stderr
    assert str(owned_stack.postgres.password_file) in " ".join(up.stdout.split()).replace(" ", "")
