"""`pg2neo dlq`: list, show, retry and drop the dead letters (rows the applier could not store in Neo4j).

A thin command over `pg2neo.transport.dead_letters`, which the web console uses too: a retry re-queues the row's key
and the applier re-reads the current row; the engine removes the dead letter once the key applies cleanly.
`dlq list --kafka` lists the Kafka sink's dead letters instead, read from its dead-letter topic
(`pg2neo.transport.sink_status`); the other subcommands are trigger mode's.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import psycopg
import typer
from neo4j.exceptions import DriverError, Neo4jError
from rich.padding import Padding
from rich.text import Text

from pg2neo.cli.app import app, console, fail, settings
from pg2neo.cli.kafka_common import DEAD_LETTER_TOPIC, ServersOption, bootstrap_servers
from pg2neo.errors import Pg2NeoError
from pg2neo.runtime.connections import resolve
from pg2neo.transport import dead_letters
from pg2neo.transport.sink_status import check_kafka, read_dead_letters, sink_groups_in_graph

dlq_app = typer.Typer(help="Dead letters: rows Neo4j refused or pg2neo could not convert.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _connect() -> psycopg.Connection[Any]:
    # Settings and connection errors reach the app's one handler (pg2neo.cli.app): a clean line and exit 2.
    return psycopg.connect(resolve(settings()).pg_dsn, autocommit=True)


@contextmanager
def _trigger_mode() -> Iterator[None]:
    """A trigger-mode command's errors, each through the app's handler; where this database has no trigger-mode
    install but Neo4j holds the Kafka sink's checkpoints, the error says where that mode's dead letters are."""
    try:
        yield
    except Pg2NeoError as exc:
        raise fail(_kafka_hint(exc)) from exc


def _kafka_hint(exc: Pg2NeoError) -> Pg2NeoError:
    if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
        return exc
    try:
        connections = resolve(settings())
        driver = connections.driver()
        try:
            groups = sink_groups_in_graph(driver, connections.neo4j_database)
        finally:
            driver.close()
    except (Neo4jError, DriverError, OSError, Pg2NeoError):
        return exc  # Neo4j cannot tell: the trigger-mode error stands alone
    if not groups:
        return exc
    names = ", ".join(group["group"] for group in groups)
    return Pg2NeoError(
        "this PostgreSQL database has no trigger-mode install (no pg2neo.dead_letters table), and Neo4j holds the "
        f"Kafka sink's progress (group {names}): list the sink's dead letters with `pg2neo dlq list --kafka`"
    )


def _selection(ids: list[int], all_: bool) -> list[int] | None:
    """The ids to act on, or None for all of them; exactly one of the two ways must be given."""
    if all_ == bool(ids):
        raise fail(Pg2NeoError("give dead-letter ids, or --all (not both)"))
    return None if all_ else ids


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
    kafka: Annotated[
        bool, typer.Option("--kafka", help="The Kafka sink's dead letters (its dead-letter topic), not trigger mode's.")
    ] = False,
    dead_letter_topic: Annotated[
        str | None,
        typer.Option(
            "--dead-letter-topic", help=f"With --kafka: the sink's dead-letter topic (default {DEAD_LETTER_TOPIC})."
        ),
    ] = None,
    servers: ServersOption = None,
) -> None:
    """The dead letters: table, key, error class, attempts, first and last failure (--kafka: the sink's, with
    their source topic, partition and offset, and the reason)."""
    if kafka or dead_letter_topic is not None or servers is not None:
        _list_kafka(servers, dead_letter_topic or DEAD_LETTER_TOPIC, limit, as_json)
        return
    with _connect() as conn, _trigger_mode():
        rows = dead_letters.list_dead_letters(conn, limit)
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    for r in rows:
        _print_dead_letter(r)
    console.print(f"{len(rows)} dead letter(s); `pg2neo dlq show ID` prints one in full")


def _list_kafka(given_servers: str | None, topic: str, limit: int, as_json: bool) -> None:
    servers = bootstrap_servers(given_servers)
    check_kafka(servers)  # a broker that does not answer is an error, never "no dead letters"
    page = read_dead_letters(servers, topic, limit)
    if as_json:
        sys.stdout.write(json.dumps(page.letters, indent=2) + "\n")
        return
    for letter in page.letters:
        at = letter["dead_lettered_at"]
        shown_at = "-" if at is None else f"{dt.datetime.fromisoformat(at):%Y-%m-%d %H:%M:%S}"
        heading = Text.assemble(
            (f"#{letter['id']}", "bold"),
            f"  {letter['topic']}  {letter['op'] or '-'}  source {letter['partition']}:{letter['offset']}"
            f"  at {shown_at}",
        )
        _print_block(heading, letter["key"], str(letter["reason"]))
    if not page.topic_exists:
        console.print(
            f"0 dead letters: Kafka has no topic {topic} (nothing was dead-lettered yet, or the sink writes to "
            "another --dead-letter-topic)",
            highlight=False,
        )
        return
    shown = len(page.letters)
    more = f" (the oldest {shown} of {page.total}: --limit shows more)" if page.total > shown else ""
    console.print(
        f"{shown} dead letter(s) on Kafka topic {topic}{more}. Fix the cause the reason names; a new change of the "
        "row (e.g. an UPDATE) sends it again; `pg2neo verify` lists the rows that still differ",
        highlight=False,
    )


def _print_dead_letter(row: dict[str, Any]) -> None:
    last = f"{row['last_failed_at']:%Y-%m-%d %H:%M:%S}"
    heading = Text.assemble(
        (f"#{row['id']}", "bold"), f"  {row['tbl']}  {row['op']}  attempts {row['attempts']}  last failed {last}"
    )
    _print_block(heading, json.dumps(row["key"]), f"{row['error_class']}: {row['message']}")


def _print_block(heading: Text, key: str, reason: str) -> None:
    """One dead letter as a short block that reads at any width, 80 columns included: a heading line, the key
    (cut with an ellipsis: a key may be 10,000 characters) and the reason, wrapped under its indent."""
    console.print(heading, no_wrap=True, overflow="ellipsis", highlight=False)
    console.print(Text(f"    key    {key}"), no_wrap=True, overflow="ellipsis", highlight=False)
    console.print(Padding(Text(f"reason {' '.join(reason.split())}"), (0, 0, 0, 4)), highlight=False)


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One dead letter in full: the error message and the row's payload."""
    with _connect() as conn, _trigger_mode():
        row = dead_letters.get_dead_letter(conn, dead_letter_id)
    if row is None:
        raise fail(Pg2NeoError(f"no dead letter with id {dead_letter_id}"))
    sys.stdout.write(json.dumps(row, default=str, indent=2) + "\n")


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
) -> None:
    """Queue the keys again: the applier re-reads the current rows; a key that applies cleanly loses its letter."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn, _trigger_mode():
        queued = dead_letters.retry_dead_letters(conn, chosen)
    console.print(f"[green]re-queued[/]: {queued} key(s); `pg2neo run` applies them")


@dlq_app.command("drop")
def dlq_drop(
    ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop every dead letter.")] = False,
) -> None:
    """Forget dead letters (the rows stay as they are in PostgreSQL and are not in Neo4j)."""
    chosen = _selection(ids or [], all_)
    with _connect() as conn, _trigger_mode():
        dropped = dead_letters.drop_dead_letters(conn, chosen)
    console.print(f"[green]dropped[/]: {dropped} dead letter(s)")
