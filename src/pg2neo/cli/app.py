"""The `pg2neo` typer app and what its commands share: the global options, the settings, the pipeline they open,
the output consoles and the one error handler that gives every command its exit code.

The `*_cmd` modules import from here, never from `pg2neo.cli.main`, which only registers them.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from pg2neo import logs
from pg2neo.cli import exits
from pg2neo.errors import Pg2NeoError
from pg2neo.pipeline import Pipeline
from pg2neo.settings import Settings, load_settings

HELP = """Keep a Neo4j graph continuously and verifiably in sync with PostgreSQL.

Settings are environment variables; a double underscore nests one in its group:
  PG2NEO_PG_DSN           postgresql://user:password@host:5432/db
  PG2NEO_NEO4J__URI       bolt://host:7687
  PG2NEO_NEO4J__USER      default neo4j
  PG2NEO_NEO4J__PASSWORD
  PG2NEO_MAPPING          the mapping file (default pg2neo.yaml; or --mapping)
  PG2NEO_APPLY__BATCH_ROWS, PG2NEO_CHECK__INTERVAL, PG2NEO_DEV__STATE_DIR, ...
Unset servers mean those of `pg2neo dev up`. A misspelt PG2NEO_* name is an error.

Exit codes: 0 ok; 1 verify/reconcile found drift;
2 configuration, connection, login or input error;
3 stopped for the operator (e.g. schema drift); 70 internal error (a bug)."""


class _ErrorsToExitCodes(TyperGroup):
    """Every command's errors end here: one clean line on stderr (a JSON event with --log-json), never a
    traceback or a secret, and the exit code of their kind (pg2neo.cli.exits)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # the output's reader closed it (`| head`): nothing is wrong and nothing more can be said there
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(code=exits.OUTPUT_CLOSED) from None
        except Exception as exc:
            raise typer.Exit(code=report(exc)) from None
        except KeyboardInterrupt as exc:
            raise typer.Exit(code=report(exc)) from None


app = typer.Typer(
    cls=_ErrorsToExitCodes,
    help=HELP,
    no_args_is_help=True,
    # Locals in a traceback would show the settings, passwords included.
    pretty_exceptions_show_locals=False,
)

console = Console()
log = logs.get_logger("cli")
err_console = Console(stderr=True)


class _State:
    settings: Settings | None = None


def settings() -> Settings:
    if _State.settings is None:
        _State.settings = load_settings()
    return _State.settings


@app.callback()
def main(
    mapping: Annotated[Path | None, typer.Option("--mapping", "-m", help="The mapping file (YAML).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    log_json: Annotated[bool, typer.Option(help="Log one JSON object per line.")] = False,
) -> None:
    logs.configure(log_level, log_json)
    loaded = load_settings()
    if mapping is not None:
        loaded = loaded.model_copy(update={"mapping": mapping})
    _State.settings = loaded


def report(exc: BaseException) -> int:
    """Print the one error line for `exc` (redacted) and return its exit code."""
    failure = exits.failure_for(exc)
    message = logs.redact(failure.message)
    if logs.json_output():
        logs.event(log, "command_failed", logging.ERROR, error=message, exit_code=failure.code)
    else:
        err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True, highlight=False)
    if failure.internal and logs.debug_enabled():
        sys.stderr.write(logs.redact("".join(traceback.format_exception(exc))))
    return failure.code


def fail(exc: Pg2NeoError) -> typer.Exit:
    return typer.Exit(code=report(exc))


def open_pipeline(check_installed: bool = False) -> Pipeline:
    """The pipeline of the settings, for a sync command to close when done. Its errors (settings, connections,
    login, mapping) reach the app's one handler: a line and exit 2."""
    return Pipeline.open(settings(), check_installed)
