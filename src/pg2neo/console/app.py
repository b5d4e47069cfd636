"""The web console: a small WSGI application with server-rendered pages (Jinja2 templates, inline SVG charts).

Place in the data flow: beside `pg2neo status`, `dlq`, `conflicts` and `verify`, and acting through the very same
functions (runtime.status, transport.dead_letters, transport.conflicts, reconcile.repair, reconcile.verify), so the
console never holds a second copy of their SQL. Each request opens its own PostgreSQL connection; actions that
apply changes (retry, resolve) drain the queue through the engine of a `Pipeline`, under the same apply lock as
`pg2neo run`.

Pages: status (/), dead letters (/dead-letters, /dead-letters/ID), conflicts (/conflicts, /conflicts/ID) and
verify (/verify). Access rules are in `pg2neo.console.security`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

import psycopg
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from neo4j import Driver
from neo4j.exceptions import Neo4jError, ServiceUnavailable

from pg2neo.console import charts, history, security
from pg2neo.errors import Pg2NeoError
from pg2neo.logs import event, get_logger, redact
from pg2neo.mapping.hashing import canonical
from pg2neo.mapping.plan import Mapping
from pg2neo.pipeline import Pipeline
from pg2neo.reconcile.repair import resolve_and_record
from pg2neo.reconcile.sides import load_conflicts
from pg2neo.reconcile.verify import KINDS, Drift, verify
from pg2neo.runtime.status import status_report
from pg2neo.settings import ApplySettings, Settings
from pg2neo.transport import audit, conflicts, dead_letters

log = get_logger("console")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
MAX_FORM_BYTES = 64 * 1024
DRAIN_SECONDS = 60.0
HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
     "frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]  # fmt: skip


@dataclass(frozen=True)
class Backend:
    """What the console works on: the servers, the checked mapping and the apply settings (for drains)."""

    pg_dsn: str
    driver: Driver
    mapping: Mapping
    database: str = "neo4j"
    apply: ApplySettings = field(default_factory=ApplySettings)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg_dsn, autocommit=True, connect_timeout=5, application_name="pg2neo-console")

    def drain(self, seconds: float = DRAIN_SECONDS) -> bool:
        """Apply queued changes for up to `seconds`; True when the queue was emptied (else `pg2neo run` goes on)."""
        with Pipeline(Settings(apply=self.apply), self.pg_dsn, self.driver, self.mapping, self.database) as pipeline:
            engine = pipeline.engine()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if engine.apply_next() is None:
                    return True
            return False


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    session: security.Session


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _redirect(location: str) -> Response:
    return Response(HTTPStatus.SEE_OTHER, headers=[("Location", location)])


class NotFound(Exception):
    pass


class ConsoleApp:
    """The WSGI application. `token` is required when `host` (the address it is bound to) is not a loopback one."""

    def __init__(self, backend: Backend, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.backend = backend
        self.loopback = security.is_loopback(host)
        if not self.loopback and not token:
            raise Pg2NeoError(
                f"the console is bound to {host}, which other machines can reach: it needs a token "
                "(set PG2NEO_CONSOLE__TOKEN, or let `pg2neo console` generate one)"
            )
        self.token = token
        self.sessions = security.Sessions()
        self.sampler = history.QueueSampler(backend.pg_dsn)
        self.templates = Environment(
            loader=PackageLoader("pg2neo.console", "templates"), autoescape=select_autoescape(default=True)
        )
        self.templates.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str, sort_keys=True)
        self.css = resources.files("pg2neo.console").joinpath("static/console.css").read_bytes()
        self._action_lock = threading.Lock()  # one action at a time: a double click does not drain twice at once
        self.last_verify: dict[str, Any] | None = None
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Response]]] = [
            ("GET", re.compile(r"/"), self.status_page),
            ("GET", re.compile(r"/dead-letters"), self.dead_letters_page),
            ("GET", re.compile(r"/dead-letters/(\d+)"), self.dead_letter_page),
            ("POST", re.compile(r"/dead-letters/(\d+)/retry"), self.retry_dead_letter),
            ("POST", re.compile(r"/dead-letters/(\d+)/drop"), self.drop_dead_letter),
            ("POST", re.compile(r"/dead-letters/retry-all"), self.retry_all),
            ("GET", re.compile(r"/conflicts"), self.conflicts_page),
            ("GET", re.compile(r"/conflicts/(\d+)"), self.conflict_page),
            ("POST", re.compile(r"/conflicts/(\d+)/resolve"), self.resolve_conflict),
            ("GET", re.compile(r"/verify"), self.verify_page),
            ("POST", re.compile(r"/verify"), self.run_verify),
        ]

    def start(self) -> None:
        self.sampler.start()

    def close(self) -> None:
        self.sampler.stop()

    # -- WSGI ------------------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        response = self.handle(environ)
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        headers += HEADERS + response.headers
        status = HTTPStatus(response.status)
        start_response(f"{status.value} {status.phrase}", headers)
        event(
            log,
            "console_request",
            logging.DEBUG,  # one line per request only when asked for
            method=environ.get("REQUEST_METHOD"),
            path=environ.get("PATH_INFO"),
            status=status.value,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return [response.body]

    def handle(self, environ: dict[str, Any]) -> Response:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO") or "/")
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        host_header = headers.get("host") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        if self.loopback and not security.is_loopback(security.host_name(host_header)):
            return self._plain(HTTPStatus.BAD_REQUEST, "this console answers only to localhost / 127.0.0.1")
        if path == "/static/console.css" and method == "GET":
            return Response(HTTPStatus.OK, self.css, "text/css; charset=utf-8")

        cookie = SimpleCookie(headers.get("cookie", ""))
        session = self.sessions.get(cookie[security.COOKIE].value if security.COOKIE in cookie else None)
        set_cookie: list[tuple[str, str]] = []
        if session is None:
            session = self.sessions.new()
            set_cookie = [("Set-Cookie", f"{security.COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict")]
        query = {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}
        form: dict[str, str] = {}
        if method == "POST":
            form = self._read_form(environ)
        request = Request(method, path, query, form, headers, session)

        response = self._guarded(request, host_header)
        response.headers += set_cookie
        return response

    def _guarded(self, request: Request, host_header: str) -> Response:
        reason = security.cross_site_reason(
            request.method, host_header, request.headers.get("origin"), request.headers.get("sec-fetch-site")
        )
        if reason is not None:
            event(log, "console_request_refused", logging.WARNING, path=request.path, reason=reason)
            return self._plain(HTTPStatus.FORBIDDEN, f"refused: a cross-site request ({reason})")
        if self.token is not None and not request.session.authenticated:
            answer = self._authenticate(request)
            if answer is not None:
                return answer
        if request.method == "POST" and not request.session.csrf_matches(request.form.get("csrf")):
            event(log, "console_request_refused", logging.WARNING, path=request.path, reason="no or wrong CSRF token")
            return self._plain(
                HTTPStatus.FORBIDDEN, "refused: the form's CSRF token is missing or stale; reload the page and retry"
            )
        return self._dispatch(request)

    def _authenticate(self, request: Request) -> Response | None:
        """None when the request may go on; else the answer (the login page, or a redirect once logged in)."""
        assert self.token is not None
        if security.token_matches(security.bearer(request.headers.get("authorization")), self.token):
            return None  # a script: this request only
        given = request.query.get("token") if request.method == "GET" else None
        if request.method == "POST" and request.path == "/login":
            if not request.session.csrf_matches(request.form.get("csrf")):
                return self._plain(HTTPStatus.FORBIDDEN, "refused: the login form's CSRF token is missing or stale")
            given = request.form.get("token")
        if security.token_matches(given, self.token):
            request.session.authenticated = True
            rest = {k: v for k, v in request.query.items() if k != "token"}
            target = "/" if request.path == "/login" else request.path
            return _redirect(target + (f"?{urlencode(rest)}" if rest else ""))
        wrong = given is not None
        page = self._render(request, "login.html", title="Log in", wrong=wrong, target=request.path)
        page.status = HTTPStatus.UNAUTHORIZED
        return page

    def _dispatch(self, request: Request) -> Response:
        known_path = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            known_path = True
            if method == request.method:
                try:
                    return handler(request, *match.groups())
                except NotFound as exc:
                    return self._error(request, HTTPStatus.NOT_FOUND, str(exc))
                except (Pg2NeoError, psycopg.Error, Neo4jError, ServiceUnavailable, OSError) as exc:
                    event(log, "console_action_failed", logging.ERROR, path=request.path, error=redact(str(exc))[:300])
                    return self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, _describe(exc))
        if known_path:
            return self._plain(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here")
        return self._error(request, HTTPStatus.NOT_FOUND, f"no page at {request.path}")

    def _read_form(self, environ: dict[str, Any]) -> dict[str, str]:
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    # -- rendering -------------------------------------------------------------------------------------------------

    def _render(self, request: Request, template: str, **context: Any) -> Response:
        html = self.templates.get_template(template).render(
            csrf=request.session.csrf,
            flashes=request.session.take_flashes(),
            path=request.path,
            **context,
        )
        return Response(HTTPStatus.OK, html.encode())

    def _error(self, request: Request, status: HTTPStatus, message: str) -> Response:
        page = self._render(request, "error.html", title=status.phrase, status=status, message=message)
        page.status = status
        return page

    @staticmethod
    def _plain(status: HTTPStatus, text: str) -> Response:
        return Response(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    # -- status ----------------------------------------------------------------------------------------------------

    def status_page(self, request: Request) -> Response:
        with self.backend.connect() as conn:
            report = status_report(conn)
            now, minutes = audit.audit_minutes(conn, history.WINDOW_SECONDS)
            batches = audit.recent_audit(conn, 15)
            if not self.sampler.samples():
                self.sampler.sample_once(conn)  # the first page after start shows the queue at once
        start = now - history.WINDOW_SECONDS
        samples = self.sampler.samples()
        depth = sorted(
            [(s.at, float(s.queue_depth)) for s in samples]
            + [(m.at + 60, m.queue_depth) for m in minutes if m.queue_depth is not None]
        )
        lag = sorted(
            [(s.at, s.lag_seconds) for s in samples]
            + [(m.at + 60, m.lag_seconds) for m in minutes if m.lag_seconds is not None]
        )
        since = f"sampled by the console every {self.sampler.every:.0f} s"
        chart_list: list[Markup] = [
            charts.line_chart("Queue depth", f"changes waiting; {since}", start, now, depth),
            charts.line_chart("Lag", f"age of the oldest waiting change, s; {since}", start, now, lag),
            charts.bar_chart(
                "Throughput",
                "events applied per minute (changes; snapshot rows lighter)",
                start,
                now,
                [(m.at, float(m.changes), float(m.snapshot_rows)) for m in minutes],
            ),
        ]
        return self._render(
            request,
            "status.html",
            title="Status",
            report=report,
            charts=chart_list,
            batches=batches,
            drift_kinds=KINDS,
        )

    # -- dead letters ----------------------------------------------------------------------------------------------

    def dead_letters_page(self, request: Request) -> Response:
        with self.backend.connect() as conn:
            rows = dead_letters.list_dead_letters(conn, limit=500)
        return self._render(request, "dead_letters.html", title="Dead letters", rows=rows)

    def dead_letter_page(self, request: Request, dead_letter_id: str) -> Response:
        with self.backend.connect() as conn:
            row = dead_letters.get_dead_letter(conn, int(dead_letter_id))
        if row is None:
            raise NotFound(f"no dead letter with id {dead_letter_id} (retried cleanly, or dropped)")
        return self._render(request, "dead_letter.html", title=f"Dead letter {dead_letter_id}", row=row)

    def retry_dead_letter(self, request: Request, dead_letter_id: str) -> Response:
        return self._retry(request, [int(dead_letter_id)])

    def retry_all(self, request: Request) -> Response:
        return self._retry(request, None)

    def _retry(self, request: Request, ids: list[int] | None) -> Response:
        with self._action_lock:
            with self.backend.connect() as conn:
                queued = dead_letters.retry_dead_letters(conn, ids)
            drained = self.backend.drain()
            with self.backend.connect() as conn:
                left = [r for r in dead_letters.list_dead_letters(conn, limit=100_000) if ids is None or r["id"] in ids]
        event(log, "console_dead_letters_retried", ids=ids or "all", queued=queued, still_dead=len(left))
        if not drained:
            request.session.flash("warning", f"re-queued {queued} key(s); `pg2neo run` applies the rest of the queue")
        elif left:
            request.session.flash(
                "error", f"re-queued {queued} key(s); {len(left)} failed again (see the reason: fix the row, retry)"
            )
        else:
            request.session.flash("ok", f"re-queued {queued} key(s): applied to Neo4j; the dead letter is gone")
        return _redirect("/dead-letters")

    def drop_dead_letter(self, request: Request, dead_letter_id: str) -> Response:
        with self.backend.connect() as conn:
            dropped = dead_letters.drop_dead_letters(conn, [int(dead_letter_id)])
        event(log, "console_dead_letter_dropped", id=int(dead_letter_id), dropped=dropped)
        request.session.flash("ok", f"dropped {dropped} dead letter(s); the row stays as it is in PostgreSQL")
        return _redirect("/dead-letters")

    # -- conflicts -------------------------------------------------------------------------------------------------

    def conflicts_page(self, request: Request) -> Response:
        with self.backend.connect() as conn:
            rows = conflicts.list_conflicts(conn, include_resolved=True)
        open_rows = [r for r in rows if r["resolved_at"] is None]
        resolved = sorted((r for r in rows if r["resolved_at"] is not None), key=lambda r: r["resolved_at"])
        return self._render(
            request, "conflicts.html", title="Conflicts", open_rows=open_rows, resolved=list(reversed(resolved))[:20]
        )

    def conflict_page(self, request: Request, conflict_id: str) -> Response:
        with self.backend.connect() as conn:
            row = conflicts.get_conflict(conn, int(conflict_id))
        if row is None:
            raise NotFound(f"no conflict with id {conflict_id}")
        pg_side, neo_side, current = row["pg_row"], row["neo4j_props"], False
        if row["resolved_at"] is None:
            try:
                drift = Drift(row["scope"], row["kind"], tuple(row["identity"]))
                (loaded,) = load_conflicts(
                    self.backend.pg_dsn, self.backend.driver, self.backend.mapping, [drift], self.backend.database
                )
                pg_side, neo_side, current = loaded.pg_row, loaded.neo4j_props, True
            except KeyError:
                pass  # the scope is no longer in the mapping: show what was recorded
        return self._render(
            request,
            "conflict.html",
            title=f"Conflict {conflict_id}",
            row=row,
            current=current,
            pg_missing=pg_side is None,
            neo_missing=neo_side is None,
            props=side_by_side(pg_side, neo_side),
        )

    def resolve_conflict(self, request: Request, conflict_id: str) -> Response:
        take = request.form.get("take", "")
        if take not in ("pg", "neo4j"):
            request.session.flash("error", "choose the side to take: PostgreSQL or Neo4j")
            return _redirect(f"/conflicts/{conflict_id}")

        with self._action_lock:
            resolve_and_record(
                self.backend.pg_dsn,
                self.backend.driver,
                self.backend.mapping,
                int(conflict_id),
                take,
                self.backend.database,
                by="console",
            )
        side = "PostgreSQL" if take == "pg" else "Neo4j"
        request.session.flash("ok", f"conflict {conflict_id} resolved: took {side}'s current state")
        return _redirect("/conflicts")

    # -- verify ----------------------------------------------------------------------------------------------------

    def verify_page(self, request: Request) -> Response:
        return self._render(request, "verify.html", title="Verify", result=self.last_verify, kinds=KINDS)

    def run_verify(self, request: Request) -> Response:
        with self._action_lock:
            report = verify(self.backend.pg_dsn, self.backend.driver, self.backend.mapping, self.backend.database)
        result = report.as_dict()
        for scope in result["scopes"]:
            scope["differences"] = sum(scope[kind] for kind in KINDS) + scope["key_collisions"]
        result["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.last_verify = result
        event(log, "console_verify", drift=report.drift_total, seconds=round(report.seconds, 2))
        return _redirect("/verify")


def side_by_side(pg: dict[str, Any] | None, neo4j: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each property of either side: both values as text, and whether they differ (compared as the verify hashes
    compare them, so a PostgreSQL timestamp and the Neo4j DateTime it became are equal)."""
    pg, neo4j = pg or {}, neo4j or {}
    out = []
    for name in sorted(set(pg) | set(neo4j)):
        in_pg, in_neo = name in pg, name in neo4j
        differs = in_pg != in_neo or (in_pg and canonical(pg[name]) != canonical(neo4j[name]))
        out.append(
            {
                "name": name,
                "pg": _text(pg[name]) if in_pg else None,
                "neo4j": _text(neo4j[name]) if in_neo else None,
                "differs": differs,
            }
        )
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    try:
        return json.dumps(value, default=str)
    except ValueError:
        return str(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Pg2NeoError):
        return redact(str(exc))
    return redact(f"{type(exc).__name__}: {str(exc).strip()}")[:1000]
