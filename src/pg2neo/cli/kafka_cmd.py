"""`pg2neo kafka config|check|register`: the Debezium connector of the scale-out path for the mapping (docs/kafka.md).

Registered on the app when `pg2neo.cli.main` imports this module. Thin commands over `pg2neo.transport.debezium`;
they need PostgreSQL (to resolve the mapping and read the catalog) and, for `register`, a Kafka Connect worker's
REST API. The local one comes from `pg2neo dev up --kafka`.

Secrets: the connector configuration holds the database password, because Connect opens the replication connection.
`config` never prints it (a mask, or the Kafka Connect config-provider reference given by `--password-ref`);
`register` sends it to Connect only, unless `--password-ref` names where Connect finds it instead.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import psycopg
import typer
from rich.text import Text

from pg2neo import logs
from pg2neo.cli import exits
from pg2neo.cli.app import app, console, err_console, settings
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import ConfigError, MappingError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime.connections import check_dsn, resolve
from pg2neo.settings import dsn_passwords
from pg2neo.transport.debezium import (
    ConnectorNames,
    Problem,
    check_database,
    connector_config,
    connector_name_ok,
)

kafka_app = typer.Typer(
    help="The Debezium connector (PostgreSQL WAL -> Kafka) for the mapping: its configuration, checks, registration.",
    no_args_is_help=True,
)
app.add_typer(kafka_app, name="kafka")

MASKED = "********"

NameOption = Annotated[
    str, typer.Option("--name", help="The connector's name: also its topic prefix, slot and publication name.")
]
PasswordRefOption = Annotated[
    str | None,
    typer.Option(
        "--password-ref",
        help="Put this in database.password instead of the password: a Kafka Connect config-provider reference "
        "such as '${file:/etc/kafka/pg.properties:password}' or '${env:PG_PASSWORD}' (the local Connect has both).",
    ),
]


def _names(name: str) -> ConnectorNames:
    if not connector_name_ok(name):
        raise ConfigError(f"connector name {name!r}: use letters, digits, `_`, `.` and `-` (at most 63)")
    return ConnectorNames(name)


def _pg_dsn() -> str:
    loaded = settings()
    if loaded.pg_dsn is not None:
        # PostgreSQL is all these commands read: they do not need the Neo4j settings `resolve` insists on.
        dsn = loaded.pg_dsn.get_secret_value()
        check_dsn(dsn)
        for secret in dsn_passwords(dsn):
            logs.add_secret(secret)
        return dsn
    return resolve(loaded).pg_dsn


def _connect() -> psycopg.Connection[Any]:
    return psycopg.connect(_pg_dsn(), autocommit=True, application_name="pg2neo-kafka")


def _connector_dsn(conn: psycopg.Connection[Any]) -> str:
    """The DSN with the password libpq used (from the DSN, PGPASSWORD or ~/.pgpass): Connect needs it."""
    dsn = _pg_dsn()
    password = conn.info.password
    if password and not psycopg.conninfo.conninfo_to_dict(dsn).get("password"):
        logs.add_secret(password)
        return psycopg.conninfo.make_conninfo(dsn, password=password)
    return dsn


def _config(conn: psycopg.Connection[Any], mapping: Mapping, name: str, password_ref: str | None) -> dict[str, str]:
    config = connector_config(mapping, _connector_dsn(conn), _names(name))
    if password_ref is not None:
        config["database.password"] = password_ref
    return config


@kafka_app.command("config")
def config_command(name: NameOption = "pg2neo", password_ref: PasswordRefOption = None) -> None:
    """Print the Debezium connector configuration for the mapping (JSON for PUT /connectors/<name>/config).

    The password is masked: `pg2neo kafka register` sends the real one, or give --password-ref."""
    with _connect() as conn:
        mapping = load_mapping(settings().mapping, conn)
        config = _config(conn, mapping, name, password_ref)
    if password_ref is None and config["database.password"]:
        config["database.password"] = MASKED
        err_console.print(
            f"database.password is masked ({MASKED}): `pg2neo kafka register` sends the real one to Connect, or "
            "rerun with --password-ref '${file:/path/to/secrets.properties:password}' for a Connect config provider",
            highlight=False,
            soft_wrap=True,
        )
    sys.stdout.write(json.dumps(config, indent=2) + "\n")


def _report(problems: list[Problem]) -> None:
    for problem in problems:
        style = "red" if problem.blocking else "yellow"
        kind = "blocking" if problem.blocking else "warning"
        # The texts hold `[...]` (YAML lists): printed as they are, not read as console markup.
        console.print(Text.assemble((kind, style), f": {problem.table}: {problem.what}"), soft_wrap=True)
        console.print(Text(f"  fix: {problem.fix}"), highlight=False, soft_wrap=True)


@kafka_app.command("check")
def check_command(name: NameOption = "pg2neo") -> None:
    """What Debezium and the sink need from the server and the mapped tables, and how to fix it (exit 2 when
    something blocks)."""
    with _connect() as conn:
        mapping = load_mapping(settings().mapping, conn)
        problems = check_database(conn, mapping, _names(name))
    _report(problems)
    if any(p.blocking for p in problems):
        raise typer.Exit(exits.ERROR)
    console.print("[green]ok[/]: the mapping can be synced through Debezium", highlight=False)


def _request(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def put_connector(connect_url: str, name: str, config: dict[str, str]) -> dict[str, Any]:
    """PUT /connectors/<name>/config: creates the connector or updates its configuration."""
    url = f"{connect_url.rstrip('/')}/connectors/{name}/config"
    try:
        answer: dict[str, Any] = _request("PUT", url, config)
        return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("message", detail))
        raise ConfigError(
            f"Kafka Connect at {connect_url} refused the connector {name} ({exc.code}): {detail[:2000]}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"cannot reach Kafka Connect at {connect_url} ({reason}): is the worker running? "
            "(`pg2neo dev up --kafka` starts a local one; `pg2neo dev status` shows its address)"
        ) from None


def connector_state(connect_url: str, name: str) -> tuple[str, str | None]:
    """(state, the first lines of a failure's trace) of the connector and its task: RUNNING once it streams."""
    status = _request("GET", f"{connect_url.rstrip('/')}/connectors/{name}/status", timeout=10)
    parts = [status["connector"], *status.get("tasks", [])]
    for part in parts:
        if part.get("state") == "FAILED":
            trace = "\n".join(str(part.get("trace", "")).splitlines()[:6])
            return "FAILED", trace
    if not status.get("tasks"):
        return "UNASSIGNED", None
    states = {part.get("state", "UNASSIGNED") for part in parts}
    return ("RUNNING", None) if states == {"RUNNING"} else (sorted(states - {"RUNNING"})[0], None)


def wait_running(connect_url: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state: str = "UNASSIGNED"
    while time.monotonic() < deadline:
        try:
            state, trace = connector_state(connect_url, name)
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            state, trace = "UNKNOWN", None
        if state == "RUNNING":
            return
        if state == "FAILED":
            raise ConfigError(f"the connector {name} failed in Kafka Connect at {connect_url}:\n{trace}")
        time.sleep(0.5)
    raise ConfigError(
        f"the connector {name} is {state} after {timeout:.0f}s in Kafka Connect at {connect_url}; "
        f"see GET {connect_url}/connectors/{name}/status and the worker's log"
    )


def _local_connect_url() -> str:
    kafka = LocalStack(settings().dev).kafka
    if kafka.running_pid("connect") is None:
        raise ConfigError(
            "no --connect-url given and the local Kafka Connect is not running: start it with "
            "`pg2neo dev up --kafka`, or pass --connect-url http://host:8083"
        )
    return kafka.info().connect_url


@kafka_app.command("register")
def register_command(
    connect_url: Annotated[
        str | None, typer.Option("--connect-url", help="Kafka Connect's REST API. Default: the local one.")
    ] = None,
    name: NameOption = "pg2neo",
    password_ref: PasswordRefOption = None,
    force: Annotated[bool, typer.Option(help="Register even when `check` finds blocking problems.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the connector to run (0: do not wait).")] = 60.0,
) -> None:
    """Register (or update) the Debezium connector for the mapping with a Kafka Connect worker."""
    with _connect() as conn:
        mapping = load_mapping(settings().mapping, conn)
        problems = check_database(conn, mapping, _names(name))
        config = _config(conn, mapping, name, password_ref)
    blocking = [p for p in problems if p.blocking]
    if blocking and not force:
        raise MappingError(
            "`pg2neo kafka check` found what Debezium needs first (or pass --force):\n"
            + "\n".join(str(p) for p in blocking)
        )
    url = (connect_url or _local_connect_url()).rstrip("/")
    put_connector(url, name, config)
    if wait > 0:
        wait_running(url, name, wait)
    console.print(
        f"[green]registered[/] connector {name} with {url}: topics {config['topic.prefix']}.<schema>.<table>, "
        f"slot {config['slot.name']}, publication {config['publication.name']}",
        highlight=False,
        soft_wrap=True,
    )
