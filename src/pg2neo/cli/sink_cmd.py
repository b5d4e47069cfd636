"""`pg2neo sink`: a Kafka sink worker (run several with one group to scale out), its status and dead letters.

Registered on the app when `pg2neo.cli.main` imports this module. The worker resolves the mapping once (PostgreSQL
is read at start only), then applies Debezium events from Kafka to Neo4j (`pg2neo.transport.sink`, docs/kafka.md).
"""

from __future__ import annotations

import json
import signal
from typing import Annotated, Any

import psycopg
import typer
from prometheus_client import start_http_server
from rich.table import Table

from pg2neo.cli.app import app, console, settings
from pg2neo.cli.kafka_common import DeadLetterOption, ServersOption
from pg2neo.cli.kafka_common import bootstrap_servers as _servers
from pg2neo.errors import ConfigError
from pg2neo.mapping.resolve import load_mapping
from pg2neo.runtime.connections import resolve
from pg2neo.transport.debezium import ConnectorNames, connector_name_ok

sink_app = typer.Typer(
    help="pg2neo's Kafka sink: apply Debezium change events to Neo4j (docs/kafka.md).",
    no_args_is_help=True,
)
app.add_typer(sink_app, name="sink")

GroupOption = Annotated[str, typer.Option("--group", help="The consumer group; run more workers with the same group.")]
NameOption = Annotated[str, typer.Option("--name", help="The connector's name (its topic prefix).")]


def _names(name: str) -> ConnectorNames:
    if not connector_name_ok(name):
        raise ConfigError(f"connector name {name!r}: use letters, digits, `_`, `.` and `-` (at most 63)")
    return ConnectorNames(name)


@sink_app.command("run")
def run_command(
    bootstrap_servers: ServersOption = None,
    group: GroupOption = "pg2neo-sink",
    name: NameOption = "pg2neo",
    dead_letter_topic: DeadLetterOption = "pg2neo.dead-letters",
    batch_rows: Annotated[int, typer.Option(help="Events read and applied per round, at most.")] = 5000,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="A stable name for this worker: restarted with it, the worker gets its partitions back at once."
        ),
    ] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
) -> None:
    """Run one sink worker until stopped (SIGTERM, Ctrl-C): Debezium events from Kafka, applied to Neo4j."""
    from pg2neo.transport.sink import Sink, SinkConfig

    connections = resolve(settings())
    mapping_file = settings().mapping
    with psycopg.connect(connections.pg_dsn, autocommit=True, application_name="pg2neo-sink") as conn:
        mapping = load_mapping(mapping_file, conn)  # once: the apply path reads no PostgreSQL
    config = SinkConfig(
        _servers(bootstrap_servers), group, _names(name), dead_letter_topic, batch_rows, instance_id=instance_id
    )
    stop = {"now": False}

    def on_signal(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if metrics_port is not None:
        start_http_server(metrics_port)
    driver = connections.driver()
    try:
        sink = Sink(config, driver, mapping, connections.neo4j_database)
        sink.ensure_schema()
        counts = sink.run(lambda: stop["now"], idle_exit)
        console.print_json(json.dumps(counts.__dict__))
    finally:
        driver.close()


@sink_app.command("status")
def status_command(
    bootstrap_servers: ServersOption = None,
    group: GroupOption = "pg2neo-sink",
    dead_letter_topic: DeadLetterOption = "pg2neo.dead-letters",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The group's workers, lag per partition (events not yet applied), end-to-end lag, and dead letters."""
    from pg2neo.transport.sink_status import check_kafka, sink_status

    servers = _servers(bootstrap_servers)
    check_kafka(servers)
    connections = resolve(settings())
    driver = connections.driver()
    try:
        status = sink_status(servers, group, dead_letter_topic, driver, connections.neo4j_database)
    finally:
        driver.close()
    if as_json:
        console.print_json(json.dumps(status))
        return
    table = Table(title=f"sink group {group}: {status['workers']} worker(s)")
    for column in ("topic", "partition", "applied up to", "end", "lag"):
        table.add_column(column)
    for row in status["partitions"]:
        table.add_row(row["topic"], str(row["partition"]), str(row["applied"]), str(row["end"]), str(row["lag"]))
    console.print(table)
    console.print(
        f"events waiting: {status['lag']}; last source commit to Neo4j commit: {status['end_to_end_seconds']} s; "
        f"relationships waiting for an end node: {status['pending_relationships']}; "
        f"dead letters: {status['dead_letters']} (pg2neo sink dead-letters)"
    )


@sink_app.command("dead-letters")
def dead_letters_command(
    bootstrap_servers: ServersOption = None,
    dead_letter_topic: DeadLetterOption = "pg2neo.dead-letters",
) -> None:
    """List the events on the dead-letter topic with their reasons (JSON lines)."""
    from pg2neo.transport.sink_status import check_kafka, dead_letters

    servers = _servers(bootstrap_servers)
    check_kafka(servers)  # else an unreachable broker would read as "no dead letters"
    for item in dead_letters(servers, dead_letter_topic):
        typer.echo(json.dumps(item))
