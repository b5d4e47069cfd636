"""`pg2neo init`, `uninstall`, `snapshot`, `run` and `status`: thin commands over the pipeline and the runtime.

Registered on the app by `pg2neo.cli.main`; their errors reach the app's one handler (`pg2neo.cli.app`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from neo4j.exceptions import DriverError, Neo4jError
from prometheus_client import start_http_server
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pg2neo import logs
from pg2neo.apply.engine import BatchResult
from pg2neo.cli import exits
from pg2neo.cli.app import console, fail, log, open_pipeline, settings
from pg2neo.cli.kafka_common import DEAD_LETTER_TOPIC, DeadLetterOption, ServersOption, local_bootstrap_servers
from pg2neo.coordinate import start_periodic_recovery
from pg2neo.devstack.neo4j import LocalNeo4j
from pg2neo.devstack.stack import LocalStack
from pg2neo.errors import ConfigError, Pg2NeoError
from pg2neo.mapping.plan import Mapping
from pg2neo.reconcile.background import BackgroundCheck
from pg2neo.runtime import install
from pg2neo.runtime.bulk import bulk_finish, bulk_load
from pg2neo.runtime.connections import Connections, resolve
from pg2neo.runtime.service import Stopper, run_service, run_snapshot
from pg2neo.runtime.status import status_report
from pg2neo.settings import Settings
from pg2neo.transport.sink_status import sink_overview


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
    with open_pipeline() as pipeline:
        try:
            statements, cypher = install.init(
                pipeline.conn,
                pipeline.driver,
                pipeline.mapping,
                pipeline.database,
                dry_run,
                service_roles=service_role or [],
            )
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    if dry_run:
        sys.stdout.write("-- PostgreSQL\n" + ";\n\n".join(statements) + ";\n\n// Neo4j\n" + ";\n".join(cypher) + ";\n")
        return
    console.print(
        f"[green]installed[/]: {len(pipeline.mapping.nodes)} node tables, {len(pipeline.mapping.joins)} join tables, "
        f"{len(cypher)} Neo4j constraints/indexes"
    )


def uninstall() -> None:
    """Remove the capture triggers and the pg2neo schema (queue, dead letters, audit) from PostgreSQL."""
    connections = resolve(settings())
    with psycopg.connect(connections.pg_dsn, autocommit=True) as conn:
        removed = install.uninstall(conn)
    console.print(f"[green]uninstalled[/]: {removed} triggers and the pg2neo schema")


def snapshot(
    restart: Annotated[bool, typer.Option("--restart", help="Forget earlier progress and load everything.")] = False,
    bulk: Annotated[
        bool,
        typer.Option(
            "--bulk",
            help="Load an EMPTY graph with `neo4j-admin database import full` (the local stack's Neo4j is stopped "
            "and started; for another Neo4j the files and the command are printed). See docs/operations.md.",
        ),
    ] = False,
    bulk_finish: Annotated[
        bool,
        typer.Option("--bulk-finish", help="After importing the files of `--bulk` by hand: make the graph current."),
    ] = False,
    bulk_dir: Annotated[
        Path | None, typer.Option("--bulk-dir", help="Where `--bulk` writes its CSV files (default: a temp folder).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Parallel COPY exports of `--bulk`.")] = os.cpu_count()
    or 2,
) -> None:
    """Load the rows that already exist, in bounded batches; resumable; safe while writes and `run` go on."""
    if bulk or bulk_finish:
        _bulk_snapshot(bulk_finish, bulk_dir, jobs)
        return
    with open_pipeline(check_installed=True) as pipeline:
        engine = pipeline.engine()
        stopper = Stopper()
        stopper.install()
        if restart:
            engine.reset_snapshot()
        totals = table_sizes(pipeline.conn, pipeline.mapping)
        started = time.monotonic()
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
    elapsed = time.monotonic() - started
    console.print(f"[green]snapshot[/]: {total:,} rows in {elapsed:.1f}s ({total / max(elapsed, 1e-9):,.0f} rows/s)")
    existing = sum(totals.values())
    if total == 0 and existing and not stopper.stopped:
        console.print(
            f"every mapped table was already loaded by an earlier snapshot ({existing:,} rows in "
            f"{len(totals)} tables now; `pg2neo run` keeps them in sync). "
            "To load everything again, run `pg2neo snapshot --restart`."
        )


def _bulk_snapshot(finish_only: bool, bulk_dir: Path | None, jobs: int) -> None:
    config = settings()
    with open_pipeline(check_installed=True) as pipeline:
        try:
            if finish_only:
                covered = bulk_finish(pipeline.pg_dsn, pipeline.driver, pipeline.mapping, pipeline.database, bulk_dir)
                console.print(f"[green]bulk load finished[/]: {covered:,} queued changes were covered by the snapshot")
                return
            local = _local_neo4j(config, pipeline.database)
            out_dir = bulk_dir or Path(tempfile.mkdtemp(prefix="pg2neo-bulk-"))
            outcome = bulk_load(
                pipeline.pg_dsn,
                pipeline.driver,
                pipeline.mapping,
                pipeline.database,
                out_dir,
                jobs,
                None if local is None else local.import_full,
            )
        except Pg2NeoError as exc:
            raise fail(exc) from exc
    if outcome.command is not None:
        console.print(
            f"[green]exported[/] {outcome.rows:,} rows to {out_dir} in {outcome.export_seconds:.1f}s.\n"
            "This Neo4j is not the local stack: import the files on its machine with Neo4j stopped (copy the folder "
            "to the same path, or edit the paths), start it, then run `pg2neo snapshot --bulk-finish`; do not run "
            "`pg2neo run` before that.\n"
        )
        sys.stdout.write(" ".join(shlex.quote(a) for a in outcome.command) + "\n")
        return
    if bulk_dir is None:
        shutil.rmtree(out_dir, ignore_errors=True)  # imported: the CSV files are no longer needed
    total = outcome.export_seconds + outcome.import_seconds + outcome.finish_seconds
    console.print(
        f"[green]bulk snapshot[/]: {outcome.rows:,} rows in {total:.1f}s (export {outcome.export_seconds:.1f}s, "
        f"import {outcome.import_seconds:.1f}s, constraints and handoff {outcome.finish_seconds:.1f}s); "
        f"{outcome.covered_changes:,} queued changes were covered by the snapshot, the rest is for `pg2neo run`"
    )


def _local_neo4j(config: Settings, database: str) -> LocalNeo4j | None:
    """The local stack's Neo4j when it is the one configured (pg2neo may stop and start it), else None."""
    stack = LocalStack(config.dev)
    if not stack.ports or stack.neo4j.running_pid() is None:
        return None
    if resolve(config).neo4j_uri.rstrip("/") != stack.neo4j.uri:
        return None
    if database != "neo4j":
        raise Pg2NeoError(f"the local stack runs Neo4j Community, whose one database is `neo4j`, not `{database}`")
    return stack.neo4j


def run_command(
    until_empty: Annotated[bool, typer.Option("--until-empty", help="Stop once the queue is drained.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """The sync service: apply queued changes to Neo4j in batches until stopped (SIGTERM/SIGINT)."""
    with open_pipeline(check_installed=True) as pipeline:
        config = pipeline.settings
        port = metrics_port or config.metrics_port
        if port:
            start_http_server(port, addr="127.0.0.1")
        engine = pipeline.engine()
        stopper = Stopper()
        stopper.install()
        logs.event(log, "service_started", tables=len(pipeline.mapping.tables), batch_rows=config.apply.batch_rows)
        check = config.check
        # Beside the loop, not in it: an orphaned prepared transaction holds the apply lock until recovery settles it.
        recovery = start_periodic_recovery(
            pipeline.pg_dsn,
            pipeline.driver,
            stopper.event,
            pipeline.database,
            interval=check.recovery_interval,
            prepared_timeout=check.prepared_timeout,
        )
        on_idle = None
        if check.enabled and not until_empty:
            on_idle = BackgroundCheck(
                pipeline.pg_dsn,
                pipeline.driver,
                pipeline.mapping,
                interval=check.interval,
                full_interval=check.full_interval,
                stale_after_seconds=check.stale_after,
                database=pipeline.database,
            )
        try:
            applied = run_service(
                engine,
                stopper,
                config.apply.poll_interval,
                until_empty,
                on_idle=on_idle,
                audit_retention_days=config.audit_retention_days,
                schema_interval=check.schema_interval,
            )
        except Pg2NeoError as exc:
            raise fail(
                exc
            ) from exc  # a schema change (SchemaChanged, a SchemaDriftError) exits 3: exits.NEEDS_OPERATOR
        finally:
            stopper.event.set()
            recovery.join(timeout=30)
    logs.event(log, "service_stopped", applied=applied)


def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    bootstrap_servers: ServersOption = None,
    dead_letter_topic: DeadLetterOption = DEAD_LETTER_TOPIC,
) -> None:
    """Trigger mode: queue depth, lag, throughput over the last minute, dead letters and the last batch. Kafka mode
    (the sink's checkpoints in Neo4j): per consumer group, workers, events waiting, end-to-end lag, relationships
    waiting for an end node and dead letters."""
    connections = resolve(settings())
    with psycopg.connect(connections.pg_dsn, autocommit=True) as conn:
        try:
            report: dict[str, Any] | None = status_report(conn)
        except psycopg.errors.UndefinedTable:
            report = None  # no trigger-mode install: Kafka mode, or neither (said below)
    servers = bootstrap_servers or local_bootstrap_servers()
    sink, neo4j_problem = _sink_overview(connections, servers, dead_letter_topic)
    if report is None and sink is None:
        raise fail(Pg2NeoError(_neither_mode(neo4j_problem)))
    if sink is not None:
        for group in sink["groups"]:
            group["dead_letters_command"] = _dead_letters_command(bootstrap_servers, dead_letter_topic)
        if servers is None:
            sink["kafka_error"] = (
                "workers, events waiting and dead letters need Kafka: pass --bootstrap-servers host:9092, or start "
                "the local Kafka with `pg2neo dev up --kafka`"
            )
    if as_json:
        shown: dict[str, Any] = {"modes": [m for m, on in (("trigger", report), ("kafka", sink)) if on is not None]}
        shown.update(report or {})
        shown["kafka_sink"] = sink
        if neo4j_problem is not None:
            shown["kafka_sink_error"] = neo4j_problem
        sys.stdout.write(json.dumps(shown, indent=2, default=str) + "\n")
    else:
        if report is None:
            console.print("trigger mode: not installed in this PostgreSQL database (Kafka mode only)")
        else:
            _print_trigger_status(report)
        if sink is not None:
            _print_sink_status(sink)
        elif neo4j_problem is not None:
            console.print(f"Kafka sink: not checked ({escape(neo4j_problem)})", highlight=False)
    if sink is not None and servers is not None and sink["kafka_error"] is not None:
        raise fail(ConfigError(sink["kafka_error"]))  # the report above holds what Neo4j knows


def _sink_overview(
    connections: Connections, servers: str | None, dead_letter_topic: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The Kafka sink's groups (None when Neo4j holds no sink checkpoint), or why Neo4j could not be asked: the
    trigger-mode report must not fail for a Neo4j that is away."""
    try:
        driver = connections.driver()
    except ConfigError as exc:
        return None, str(exc)
    try:
        return sink_overview(driver, servers, dead_letter_topic, connections.neo4j_database), None
    except (Neo4jError, DriverError, OSError) as exc:
        return None, logs.redact(exits.failure_for(exc).message)
    finally:
        driver.close()


def _neither_mode(neo4j_problem: str | None) -> str:
    if neo4j_problem is not None:
        return (
            "pg2neo is not installed in this PostgreSQL database (trigger mode: run `pg2neo init`), and the Kafka "
            f"sink's progress in Neo4j could not be read: {neo4j_problem}"
        )
    return (
        "pg2neo runs in neither mode here: this PostgreSQL database has no pg2neo install and Neo4j holds no Kafka "
        "sink checkpoint. Start trigger mode with `pg2neo init` then `pg2neo run`; or Kafka mode with "
        "`pg2neo kafka register` then `pg2neo sink run` (docs/kafka.md)"
    )


def _dead_letters_command(given_servers: str | None, dead_letter_topic: str) -> str:
    command = ["pg2neo", "dlq", "list", "--kafka"]
    if dead_letter_topic != DEAD_LETTER_TOPIC:
        command += ["--dead-letter-topic", dead_letter_topic]
    if given_servers:
        command += ["--bootstrap-servers", given_servers]
    return shlex.join(command)


def _print_trigger_status(report: dict[str, Any]) -> None:
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


def _print_sink_status(sink: dict[str, Any]) -> None:
    kafka_read = sink["kafka_error"] is None
    title = f"Kafka sink (brokers {sink['bootstrap_servers']})" if kafka_read else "Kafka sink"
    table = Table("measure", "value", title=escape(title))
    if not kafka_read:
        table.add_row("Kafka", f"[yellow]not read[/]: {escape(sink['kafka_error'])}")
    needs_kafka = "unknown (needs Kafka)"
    for group in sink["groups"]:
        partitions = group["partitions"]
        workers = needs_kafka if group["workers"] is None else f"{group['workers']} worker(s)"
        table.add_row(f"group {escape(group['group'])}", workers)
        waiting = needs_kafka if group["lag"] is None else f"{group['lag']:,} in {len(partitions)} partition(s)"
        table.add_row("  events waiting", waiting)
        if not kafka_read:
            places = [f"{p['topic']}/{p['partition']}: {p['applied']:,}" for p in partitions]
            more = f" and {len(places) - 6} more" if len(places) > 6 else ""
            table.add_row("  applied up to (next offset)", escape(", ".join(places[:6]) + more) or "nothing yet")
        seconds = group["end_to_end_seconds"]
        table.add_row(
            "  end-to-end lag",
            "nothing applied yet" if seconds is None else f"{seconds:.2f} s (source commit to Neo4j commit)",
        )
        table.add_row("  relationships waiting for an end node", f"{group['pending_relationships']:,}")
        dead = group["dead_letters"]
        command = escape(group["dead_letters_command"])
        table.add_row("  dead letters", needs_kafka if dead is None else f"{dead:,} (list them: {command})")
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


def table_sizes(conn: psycopg.Connection[Any], mapping: Mapping) -> dict[str, int]:
    sizes = {}
    for entry in mapping.entries:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(entry.schema, entry.name))
        ).fetchone()
        sizes[entry.table] = int(row[0]) if row else 0
    return sizes
