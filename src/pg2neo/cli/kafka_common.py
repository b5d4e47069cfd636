"""What the commands that read Kafka share (`sink`, `status`, `dlq list --kafka`): the broker options and where
the brokers are when none are given (the local Kafka of `pg2neo dev up --kafka`, when it runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from pg2neo.cli.app import settings
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import ConfigError

DEAD_LETTER_TOPIC = "pg2neo.dead-letters"  # the sink's default (`pg2neo sink run --dead-letter-topic`)

ServersOption = Annotated[
    str | None, typer.Option("--bootstrap-servers", help="Kafka brokers. Default: the local Kafka (dev up --kafka).")
]
DeadLetterOption = Annotated[str, typer.Option("--dead-letter-topic", help="Where events that cannot apply go.")]


def local_bootstrap_servers() -> str | None:
    """The brokers of the local Kafka when it is running, else None."""
    kafka = LocalStack(settings().dev).kafka
    if kafka.running_pid("broker") is None:
        return None
    return kafka.info().bootstrap_servers


def bootstrap_servers(given: str | None) -> str:
    """`given`, else the local Kafka's brokers; a `ConfigError` that says how to give them when neither exists."""
    servers = given or local_bootstrap_servers()
    if servers is None:
        raise ConfigError(
            "no --bootstrap-servers given and the local Kafka is not running: start it with "
            "`pg2neo dev up --kafka`, or pass --bootstrap-servers host:9092"
        )
    return servers
