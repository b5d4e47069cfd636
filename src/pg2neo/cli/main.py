"""The `pg2neo` command: thin commands that load settings, build the runtime and call it."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from prometheus_client import start_http_server
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from pg2neo import logs
from pg2neo.apply.engine import BatchResult, Engine
from pg2neo.cli import exits
from pg2neo.coordinate import start_periodic_recovery
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import Pg2NeoError
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile.background import BackgroundCheck
from pg2neo.runtime import install
from pg2neo.runtime.connections import resolve
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.runtime.status import status_report
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
dev_app = typer.Typer(help="The embedded local PostgreSQL + Neo4j stack.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")

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


@dev_app.command("up")
def dev_up() -> None:
    """Start the local PostgreSQL 15 and Neo4j 5.26 (with APOC); return when both answer."""
    stack = LocalStack(settings().dev)
    started = time.monotonic()
    try:
        timings = stack.up()
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    info = stack.info()
    console.print(
        f"[green]up[/] in {time.monotonic() - started:.1f}s "
        f"(postgres {timings['postgres']:.1f}s, neo4j {timings['neo4j']:.1f}s)\n"
        f"  PostgreSQL  {stack.postgres.dsn_without_password}  password in {stack.postgres.password_file}\n"
        f"  Neo4j       {info.neo4j_uri}  user neo4j, password in {stack.neo4j.password_file}",
        highlight=False,
    )


@dev_app.command("down")
def dev_down() -> None:
    """Stop both local servers cleanly."""
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
    console.print(table)


# -- the sync commands ----------------------------------------------------------------------------------------


class Context:
    """What a sync command needs: connections, a PostgreSQL session, the driver and the checked mapping."""

    def __init__(self, check_installed: bool = False) -> None:
        self.settings = settings()
        self.connections = resolve(self.settings)
        self.driver = self.connections.driver()
        try:
            # A wrong Neo4j password is refused before anything is done, not after `init` changed PostgreSQL.
            self.connections.check_neo4j_login(self.driver)
            self.conn = psycopg.connect(self.connections.pg_dsn, autocommit=True)
            try:
                self.mapping = load_mapping(self.settings.mapping, self.conn)
                if check_installed:
                    install.check_installed(self.conn, self.mapping)
            except BaseException:
                self.conn.close()
                raise
        except BaseException:
            self.driver.close()
            raise

    def engine(self) -> Engine:
        return Engine(
            self.connections.pg_dsn, self.driver, self.mapping, self.settings.apply, self.connections.neo4j_database
        )

    def close(self) -> None:
        self.conn.close()
        self.driver.close()


def _context(check_installed: bool = False) -> Context:
    # Its errors (settings, connections, login, mapping) reach the one handler of the app: a line and exit 2.
    return Context(check_installed)


@app.command()
def init(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the SQL and Cypher instead of running it.")] = False,
    service_role: Annotated[
        list[str] | None,
        typer.Option(
            "--service-role",
            help="A role that runs the service (run, snapshot, verify, status, dlq): granted what it needs, and "
            "again by every later init (repeatable). See docs/operations.md.",
        ),
    ] = None,
) -> None:
    """Validate the mapping; install the capture triggers and pg2neo schema; create Neo4j constraints. Idempotent."""
    ctx = _context()
    try:
        statements, cypher = install.init(
            ctx.conn, ctx.driver, ctx.mapping, ctx.connections.neo4j_database, dry_run, service_roles=service_role or []
        )
    except Pg2NeoError as exc:
        raise fail(exc) from exc
    finally:
        ctx.close()
    if dry_run:
        sys.stdout.write("-- PostgreSQL\n" + ";\n\n".join(statements) + ";\n\n// Neo4j\n" + ";\n".join(cypher) + ";\n")
        return
    console.print(
        f"[green]installed[/]: {len(ctx.mapping.nodes)} node tables, {len(ctx.mapping.joins)} join tables, "
        f"{len(cypher)} Neo4j constraints/indexes"
    )


@app.command()
def uninstall() -> None:
    """Remove the capture triggers and the pg2neo schema (queue, dead letters, audit) from PostgreSQL."""
    s = settings()
    connections = resolve(s)
    with psycopg.connect(connections.pg_dsn, autocommit=True) as conn:
        removed = install.uninstall(conn)
    console.print(f"[green]uninstalled[/]: {removed} triggers and the pg2neo schema")


@app.command()
def snapshot(
    restart: Annotated[bool, typer.Option("--restart", help="Forget earlier progress and load everything.")] = False,
) -> None:
    """Load the rows that already exist, in bounded batches; resumable; safe while writes and `run` go on."""
    ctx = _context(check_installed=True)
    engine = ctx.engine()
    stopper = Stopper()
    stopper.install()
    if restart:
        engine.reset_snapshot()
    totals = table_sizes(ctx.conn, ctx.mapping)
    started = time.monotonic()
    try:
        if console.is_terminal:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                tasks = {t: progress.add_task(t, total=n, rate="") for t, n in totals.items()}

                def on_page(table: str, result: BatchResult) -> None:
                    task = progress.tasks[tasks[table]]
                    rate = result.extra["rows_done"] / max(task.elapsed or 1e-9, 1e-9)
                    progress.update(tasks[table], completed=result.extra["rows_done"], rate=f"{rate:,.0f} rows/s")
                    if result.done:
                        progress.update(tasks[table], total=result.extra["rows_done"])

                total = run_snapshot(engine, stopper, on_page)
        else:

            def on_page(table: str, result: BatchResult) -> None:
                logs.event(
                    log,
                    "snapshot_progress",
                    table=table,
                    rows_done=result.extra["rows_done"],
                    estimated_total=totals.get(table),
                    done=result.done,
                )

            total = run_snapshot(engine, stopper, on_page)
    finally:
        engine.close()
        ctx.close()
    elapsed = time.monotonic() - started
    console.print(f"[green]snapshot[/]: {total:,} rows in {elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f} rows/s)")
    existing = sum(totals.values())
    if total == 0 and existing and not stopper.stopped:
        console.print(
            f"every mapped table was already loaded by an earlier snapshot ({existing:,} rows in "
            f"{len(totals)} tables now; `pg2neo run` keeps them in sync). "
            "To load everything again, run `pg2neo snapshot --restart`."
        )


@app.command("run")
def run_command(
    until_empty: Annotated[bool, typer.Option("--until-empty", help="Stop once the queue is drained.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """The sync service: apply queued changes to Neo4j in batches until stopped (SIGTERM/SIGINT)."""
    ctx = _context(check_installed=True)
    port = metrics_port or ctx.settings.metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1")
    engine = ctx.engine()
    stopper = Stopper()
    stopper.install()
    logs.event(log, "service_started", tables=len(ctx.mapping.tables), batch_rows=ctx.settings.apply.batch_rows)
    check = ctx.settings.check
    # Beside the loop, not in it: an orphaned prepared transaction holds the apply lock until recovery settles it.
    recovery = start_periodic_recovery(
        ctx.connections.pg_dsn,
        ctx.driver,
        stopper.event,
        ctx.connections.neo4j_database,
        interval=check.recovery_interval,
        prepared_timeout=check.prepared_timeout,
    )
    on_idle = None
    if check.enabled and not until_empty:
        on_idle = BackgroundCheck(
            ctx.connections.pg_dsn,
            ctx.driver,
            ctx.mapping,
            interval=check.interval,
            full_interval=check.full_interval,
            stale_after_seconds=check.stale_after,
            database=ctx.connections.neo4j_database,
        )
    try:
        applied = run_service(
            engine,
            stopper,
            ctx.settings.apply.poll_interval,
            until_empty,
            on_idle=on_idle,
            audit_retention_days=ctx.settings.audit_retention_days,
            schema_interval=ctx.settings.check.schema_interval,
        )
    except Pg2NeoError as exc:
        raise fail(exc) from exc  # a schema change (SchemaChanged, a SchemaDriftError) exits 3: exits.NEEDS_OPERATOR
    finally:
        stopper.event.set()
        recovery.join(timeout=30)
        engine.close()
        ctx.close()
    logs.event(log, "service_stopped", applied=applied)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Queue depth, lag, throughput over the last minute, dead letters and the last batch."""
    connections = resolve(settings())
    with psycopg.connect(connections.pg_dsn, autocommit=True) as conn:
        try:
            report = status_report(conn)
        except psycopg.errors.UndefinedTable as exc:
            raise fail(Pg2NeoError("pg2neo is not installed in this database: run `pg2neo init`")) from exc
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    table = Table("measure", "value")
    table.add_row("queue depth", f"{report['queue_depth']:,}")
    table.add_row("lag (oldest unapplied)", f"{report['lag_seconds']:.2f} s")
    table.add_row("applied, last minute", f"{report['applied_last_minute']:,} ({report['throughput_per_second']}/s)")
    table.add_row("dead letters", str(report["dead_letters"]))
    table.add_row("drift (background check)", _drift_text(report["drift"]))
    for change in report["schema_changes"]:
        table.add_row(
            f"[red]schema changed[/] {change['table']}", f"{change['kind']}: {change['detail']}\n{change['remedy']}"
        )
    for service in report["services"] or [{"name": "-", "shown": "no service running", "detail": ""}]:
        detail = f": {service['detail']}" if service["detail"] else ""
        table.add_row(f"service {service['name']}", f"{service['shown']}{detail}")
    for tbl, progress in report["snapshot"].items():
        table.add_row(f"snapshot {tbl}", f"{progress['rows']:,} rows, {'done' if progress['done'] else 'in progress'}")
    last = report["last_batch"]
    table.add_row(
        "last batch",
        "none"
        if last is None
        else f"{last['kind']} {last['events']} events in {last['duration_ms']} ms at {last['finished_at']}",
    )
    console.print(table)


def _drift_text(drift: dict[str, Any] | None) -> str:
    if drift is None:
        return "not checked yet"
    checks = "; ".join(
        f"{mode} check {check['seconds_ago']:.0f} s ago: {check['drift']:,}" for mode, check in drift["checks"].items()
    )
    return (
        f"{drift['total']:,} (missing {drift.get('missing', 0):,}, extra {drift.get('extra', 0):,}, mismatch "
        f"{drift.get('mismatch', 0):,}, stale {drift.get('stale', 0):,}; {checks})"
    )


@app.command()
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


def table_sizes(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, int]:
    sizes = {}
    for entry in mapping.entries:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(entry.schema, entry.name))
        ).fetchone()
        sizes[entry.table] = int(row[0]) if row else 0
    return sizes


def run() -> None:
    app()


# Command groups kept in their own modules register themselves on `app` when imported.
from pg2neo.cli import dlq_cmd, strict_cmd, verify_cmd  # noqa: E402, F401
from pg2neo.cli.console_cmd import console as console_command  # noqa: E402
from pg2neo.cli.mapping_cmd import mapping_app  # noqa: E402

app.add_typer(mapping_app, name="mapping")
app.command("console")(console_command)
