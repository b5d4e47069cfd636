"""`pg2neo dev up|down|status` (the embedded local PostgreSQL + Neo4j, with `--kafka` also a Kafka broker and a Kafka
Connect worker with the Debezium plugin) and `pg2neo demo`, which runs on it.

Registered on the app by `pg2neo.cli.main`; their errors reach the app's one handler (`pg2neo.cli.app`).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from pg2neo.cli.app import console, fail, settings
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import Pg2NeoError

dev_app = typer.Typer(help="The embedded local PostgreSQL + Neo4j stack.", no_args_is_help=True)


@dev_app.command("up")
def dev_up(
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka",
            help="Also a Kafka 4.4 broker (KRaft) and a Kafka Connect worker with the Debezium 3.7 PostgreSQL plugin.",
        ),
    ] = False,
) -> None:
    """Start the local PostgreSQL 15 and Neo4j 5.26 (with APOC); return when both answer."""
    stack = LocalStack(settings().dev)
    started = time.monotonic()
    try:
        timings = stack.up(kafka=kafka)
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    info = stack.info()
    took = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings.items())
    lines = [
        f"[green]up[/] in {time.monotonic() - started:.1f}s ({took})",
        f"  PostgreSQL  {stack.postgres.dsn_without_password}  password in {stack.postgres.password_file}",
        f"  Neo4j       {info.neo4j_uri}  user neo4j, password in {stack.neo4j.password_file}",
    ]
    if kafka:
        kafka_info = stack.kafka.info()
        lines.append(f"  Kafka       {kafka_info.bootstrap_servers}  (bootstrap servers)")
        lines.append(f"  Connect     {kafka_info.connect_url}  (REST API; `pg2neo kafka register` uses it)")
    console.print("\n".join(lines), highlight=False)


@dev_app.command("down")
def dev_down() -> None:
    """Stop the local servers cleanly (Kafka Connect and the broker too, when they run)."""
    try:
        LocalStack(settings().dev).down()
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    console.print("[green]down[/]")


@dev_app.command("status")
def dev_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Versions, ports, data folders and whether each server is up."""
    status = LocalStack(settings().dev).status()
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    table = Table("server", "up", "version", "port", "data")
    pg, neo = status["postgres"], status["neo4j"]
    table.add_row("PostgreSQL", str(pg["up"]), pg.get("version", ""), str(pg.get("port", "")), pg.get("data", ""))
    table.add_row(
        "Neo4j",
        str(neo["up"]),
        f"{neo.get('version', '')} (APOC {neo.get('apoc', '')})",
        str(neo.get("bolt_port", "")),
        neo.get("data", ""),
    )
    kafka = status.get("kafka")
    if kafka is not None:
        broker, connect = kafka["broker"], kafka["connect"]
        table.add_row("Kafka", str(broker["up"]), kafka["kafka"], str(broker.get("port", "")), kafka["root"])
        connectors = connect.get("connectors")
        described = (
            ", ".join(f"{name}: {item['state']}" for name, item in connectors.items())
            if isinstance(connectors, dict)
            else str(connectors or "")
        )
        table.add_row(
            "Kafka Connect",
            str(connect["up"]),
            f"{kafka['kafka']} (Debezium {kafka['debezium']})",
            str(connect.get("port", "")),
            described,
        )
    console.print(table)


def demo(
    scale: Annotated[int, typer.Option(help="Content items to generate (other tables in proportion).")] = 200,
    live_operations: Annotated[int, typer.Option(help="Live writes applied while `run` is going.")] = 300,
) -> None:
    """Start the local stack, load the reference schema with data, init, snapshot, run live writes, compare."""
    from pg2neo.demo.flow import run_demo

    try:
        run_demo(settings(), console, scale, live_operations)
    except Pg2NeoError as exc:
        raise fail(exc) from exc
