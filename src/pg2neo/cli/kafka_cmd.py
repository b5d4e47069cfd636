"""`pg2neo kafka`: the scale-out path (Debezium -> Kafka -> pg2neo sink workers), see docs/kafka.md.

Thin commands: the local Kafka + Connect (`up`, `down`, `status`), the connector configuration for the mapping
(`connector-config`, `check`, `register`), the sink worker (`sink`) and the dead-letter topic (`dead-letters`).
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer

from pg2neo.errors import ConfigError, MappingError
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime.connections import resolve
from pg2neo.transport.debezium import (
    ConnectorNames,
    check_mapping,
    connector_config,
    connector_name_ok,
    replica_identities,
)

kafka_app = typer.Typer(help="Debezium -> Kafka -> Neo4j: the local Kafka, the connector and the sink workers.")

NameOption = Annotated[str, typer.Option("--name", help="The connector's name (also its slot and topic prefix).")]


def _settings() -> Any:
    from pg2neo.cli.main import settings

    return settings()


def _local_kafka() -> Any:
    from pg2neo.devstack.kafka import LocalKafka

    dev = _settings().dev
    return LocalKafka(dev.state_dir.resolve() / "kafka", dev.cache_dir)


def _names(name: str) -> ConnectorNames:
    if not connector_name_ok(name):
        raise ConfigError(f"connector name {name!r}: use letters, digits, `_`, `.` and `-`")
    return ConnectorNames(name)


@kafka_app.command("up")
def kafka_up() -> None:
    """Start the local Kafka broker (KRaft) and a Kafka Connect worker with the Debezium PostgreSQL plugin."""
    kafka = _local_kafka()
    timings = kafka.up()
    info = kafka.info()
    typer.echo(f"bootstrap servers: {info.bootstrap_servers}\nConnect REST:      {info.connect_url}")
    typer.echo(" ".join(f"{k}={v:.1f}s" for k, v in timings.items()))


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local Kafka Connect worker and broker."""
    _local_kafka().down()


@kafka_app.command("status")
def kafka_status() -> None:
    """The local Kafka + Connect: running or not, addresses, versions (JSON)."""
    typer.echo(json.dumps(_local_kafka().status(), indent=2))


def _mapping_and_dsn() -> tuple[Any, str, Any]:
    loaded = _settings()
    connections = resolve(loaded)
    conn = psycopg.connect(connections.pg_dsn, autocommit=True)
    return load_mapping(loaded.mapping, conn), connections.pg_dsn, conn


@kafka_app.command("connector-config")
def connector_config_command(name: NameOption = "pg2neo") -> None:
    """Print the Debezium connector configuration for the mapping (JSON; the password masked: `register` sends it)."""
    mapping, dsn, conn = _mapping_and_dsn()
    conn.close()
    config = connector_config(mapping, dsn, _names(name))
    if config.get("database.password"):
        # no output of pg2neo shows a secret; put yours in Connect's config provider or let `register` send it
        config["database.password"] = "***"
    typer.echo(json.dumps(config, indent=2))


@kafka_app.command("check")
def check_command() -> None:
    """Say what Debezium and the sink need from the mapped tables, and how to fix it (exit 2 when blocking)."""
    mapping, _, conn = _mapping_and_dsn()
    with conn:
        problems = check_mapping(mapping, replica_identities(conn, mapping))
    for problem in problems:
        typer.echo(str(problem))
    if any(p.blocking for p in problems):
        raise typer.Exit(2)
    typer.echo("ok: the mapping can be synced through Debezium")


def put_connector(connect_url: str, name: str, config: dict[str, str]) -> dict[str, Any]:
    """PUT /connectors/<name>/config: creates or updates the connector."""
    request = urllib.request.Request(
        f"{connect_url.rstrip('/')}/connectors/{name}/config",
        data=json.dumps(config).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise ConfigError(f"Kafka Connect at {connect_url} refused the connector {name}: {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"cannot reach Kafka Connect at {connect_url} ({exc}); is it running?") from exc


@kafka_app.command("register")
def register_command(
    connect_url: Annotated[str | None, typer.Option("--connect-url", help="Default: the local Connect.")] = None,
    name: NameOption = "pg2neo",
    force: Annotated[bool, typer.Option(help="Register even when `check` finds blocking problems.")] = False,
) -> None:
    """Register (or update) the Debezium connector for the mapping with a Kafka Connect worker."""
    mapping, dsn, conn = _mapping_and_dsn()
    with conn:
        problems = check_mapping(mapping, replica_identities(conn, mapping))
    blocking = [p for p in problems if p.blocking]
    if blocking and not force:
        raise MappingError("fix these first (or pass --force):\n" + "\n".join(str(p) for p in blocking))
    url = connect_url or _local_kafka().info().connect_url
    put_connector(url, name, connector_config(mapping, dsn, _names(name)))
    typer.echo(f"registered connector {name} with {url}")


@kafka_app.command("sink")
def sink_command(
    bootstrap_servers: Annotated[str | None, typer.Option(help="Default: the local Kafka.")] = None,
    group: Annotated[
        str, typer.Option(help="The consumer group; run more workers with the same group.")
    ] = "pg2neo-sink",
    name: NameOption = "pg2neo",
    dead_letter_topic: Annotated[str, typer.Option()] = "pg2neo.dead-letters",
    batch_rows: Annotated[int, typer.Option()] = 2000,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
) -> None:
    """Run one sink worker: apply Debezium change events from Kafka to Neo4j until stopped (SIGTERM, Ctrl-C)."""
    from pg2neo.transport.sink import Sink, SinkConfig

    loaded = _settings()
    connections = resolve(loaded)
    mapping, _, conn = _mapping_and_dsn()
    conn.close()  # the mapping is resolved once; the apply path reads no PostgreSQL
    servers = bootstrap_servers or _local_kafka().info().bootstrap_servers
    driver = connections.driver()
    stop = {"now": False}

    def on_signal(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        sink = Sink(
            SinkConfig(servers, group, _names(name), dead_letter_topic, batch_rows),
            driver,
            mapping,
            connections.neo4j_database,
        )
        counts = sink.run(lambda: stop["now"], idle_exit)
        typer.echo(json.dumps(counts.__dict__))
    finally:
        driver.close()


@kafka_app.command("dead-letters")
def dead_letters_command(
    bootstrap_servers: Annotated[str | None, typer.Option(help="Default: the local Kafka.")] = None,
    dead_letter_topic: Annotated[str, typer.Option()] = "pg2neo.dead-letters",
) -> None:
    """List the events on the dead-letter topic with their reasons (JSON lines)."""
    from pg2neo.transport.sink import dead_letters

    servers = bootstrap_servers or _local_kafka().info().bootstrap_servers
    for item in dead_letters(servers, dead_letter_topic):
        typer.echo(json.dumps(item))


__all__ = ["Path", "kafka_app", "put_connector"]
