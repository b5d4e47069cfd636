"""`pg2neo console`: serve the web console (status, dead letters, conflicts, verify) until stopped.

A thin command: it opens the pipeline (settings, mapping, connections) like every sync command, and serves
`pg2neo.console.app.ConsoleApp` with the standard library's threaded WSGI server. Registered on the app by
`pg2neo.cli.main`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pg2neo.cli.app import console as out
from pg2neo.cli.app import open_pipeline
from pg2neo.console.app import Backend, ConsoleApp
from pg2neo.console.security import generate_token, is_loopback
from pg2neo.console.server import serve_in_thread
from pg2neo.logs import event, get_logger
from pg2neo.runtime.service import Stopper
from pg2neo.settings import Settings

log = get_logger("console")


def configured_token(settings: Settings) -> str | None:
    """`PG2NEO_CONSOLE__TOKEN`, when set and not empty."""
    token = settings.console.token
    return (token.get_secret_value() or None) if token is not None else None


def console(
    host: Annotated[
        str, typer.Option(help="Address to listen on. Beyond 127.0.0.1 / localhost an access token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8089,
) -> None:
    """Serve the web console: status with charts, dead letters (retry, drop), conflicts (resolve), verify."""
    with open_pipeline(check_installed=True) as pipeline:
        token = configured_token(pipeline.settings)
        generated = False
        if token is None and not is_loopback(host):
            token, generated = generate_token(), True
        backend = Backend(
            pipeline.pg_dsn, pipeline.driver, pipeline.mapping, pipeline.database, pipeline.settings.apply
        )
        app = ConsoleApp(backend, host, token)
        stopper = Stopper()
        stopper.install()
        server, thread = serve_in_thread(app, host, port)
        shown_host = f"[{host}]" if ":" in host else host
        url = f"http://{shown_host}:{server.server_port}/"
        out.print(f"[green]pg2neo console[/] at {url}  (Ctrl-C stops it)", highlight=False)
        if generated:
            # Printed this once only; it is not logged. Set PG2NEO_CONSOLE__TOKEN to choose a lasting one.
            out.print(f"access token: {token}\n  open {url}?token={token}", highlight=False)
        event(log, "console_started", host=host, port=server.server_port, token_required=token is not None)
        try:
            stopper.event.wait()
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()
            app.close()
    event(log, "console_stopped", reason=stopper.reason)
