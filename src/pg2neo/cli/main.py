"""The `pg2neo` command: registers every command on the app (`pg2neo.cli.app`) and holds the entry point.

Import `app` from here, not from `pg2neo.cli.app`: here it has its commands. The order of registration is the order
`pg2neo --help` lists the commands and groups in.
"""

from __future__ import annotations

from pg2neo.cli import dev_cmd, strict_cmd, sync_cmd
from pg2neo.cli.app import app
from pg2neo.cli.console_cmd import console
from pg2neo.cli.mapping_cmd import mapping_app

app.add_typer(dev_cmd.dev_app, name="dev")
app.command()(sync_cmd.init)
app.command()(sync_cmd.uninstall)
app.command()(sync_cmd.snapshot)
app.command("run")(sync_cmd.run_command)
app.command()(sync_cmd.status)
app.command()(dev_cmd.demo)
app.command("recover")(strict_cmd.recover_command)

# `dlq` and `verify`, `reconcile`, `conflicts` register themselves on `app` when imported: here, after `recover`.
from pg2neo.cli import dlq_cmd, verify_cmd  # noqa: E402, F401

app.command("console")(console)
app.add_typer(mapping_app, name="mapping")
# `kafka` and `sink` register themselves on `app` when imported: here, after `mapping`.
from pg2neo.cli import kafka_cmd, sink_cmd  # noqa: E402, F401


def run() -> None:
    app()


__all__ = ["app", "run"]
