"""The web console in a real browser (Debian's Chromium, headless, driven by Playwright) against a synced stack.

Each page is opened; a dead letter is retried and a conflict resolved by clicking, then the graph, the dead letters
and the audit trail are checked in the servers themselves. Also: a POST without the CSRF token, or from another
origin, is refused; beyond loopback the token is required; `pg2neo console` serves and stops.

Set PG2NEO_TEST_SCREENSHOTS=docs to write the pages' screenshots (docs/console-*.png).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neo4j import Driver
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pg2neo.console.app import Backend, ConsoleApp
from pg2neo.console.server import serve_in_thread
from pg2neo.mapping.plan import Mapping
from pg2neo.mapping.resolve import load_mapping
from pg2neo.reconcile import repair
from pg2neo.reconcile.verify import verify
from pg2neo.runtime import install
from pg2neo.runtime.connections import Connections
from pg2neo.transport.schema import mark_own_write
from syncing import drain

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]

SCHEMA = """
CREATE TABLE team (id integer PRIMARY KEY, name text NOT NULL, city text);
CREATE TABLE player (
    id      integer PRIMARY KEY,
    team_id integer REFERENCES team (id),
    name    text NOT NULL,
    scores  integer[]
);
"""

MAPPING = """
nodes:
  - table: team
    label: Team
  - table: player
    label: Player
    relationships:
      - {type: PLAYS_FOR, columns: team_id, to: team}
"""


@dataclass
class Stack:
    dsn: str
    conn: psycopg.Connection[Any]
    driver: Driver
    mapping: Mapping
    conns: Connections

    def cypher(self, query: str, **params: Any) -> list[Any]:
        with self.driver.session() as session:
            return list(session.run(query, **params))

    def one(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def drain(self) -> None:
        drain(self.dsn, self.driver, self.mapping)


@pytest.fixture
def stack(pg_dsn: str, graph: Connections, tmp_path: Path) -> Iterator[Stack]:
    """Two teams, three players synced; player 3's scores hold a NULL, which Neo4j cannot store: a dead letter."""
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, graph.driver() as driver:
        conn.execute(SCHEMA)
        mapping = load_mapping(path, conn)
        install.init(conn, driver, mapping)
        conn.execute("INSERT INTO team VALUES (1, 'Falcons', 'Lyon'), (2, 'Herons', 'Gent')")
        conn.execute(
            "INSERT INTO player VALUES (1, 1, 'Ada', '{3,5}'), (2, 2, 'Bo', '{7}'), (3, 1, 'Cy', ARRAY[4, NULL, 6])"
        )
        s = Stack(pg_dsn, conn, driver, mapping, graph)
        s.drain()
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium; run `bash scripts/system-deps.sh` "
            "(as root; `make test` runs it first)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    app: ConsoleApp
    url: str


@contextmanager
def serve(stack: Stack, host: str = "127.0.0.1", token: str | None = None) -> Iterator[Console]:
    app = ConsoleApp(Backend(stack.dsn, stack.driver, stack.mapping), host, token)
    server, thread = serve_in_thread(app, host, 0)
    try:
        yield Console(app, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.close()


@pytest.fixture
def console(stack: Stack) -> Iterator[Console]:
    with serve(stack) as served:
        yield served


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("PG2NEO_TEST_SCREENSHOTS")
    if folder:
        target = Path(folder) if Path(folder).is_absolute() else ROOT / folder
        page.screenshot(path=str(target / f"console-{name}.png"), full_page=True)


def test_pages_retry_a_dead_letter_and_resolve_a_conflict(stack: Stack, console: Console, page: Page) -> None:
    # A conflict for the manual policy: the graph's Team 1 was edited by hand.
    stack.cypher("MATCH (t:Team {id: 1}) SET t.name = 'edited in graph'")
    report = verify(stack.dsn, stack.driver, stack.mapping)
    result = repair.reconcile(stack.dsn, stack.driver, stack.mapping, report.drifts, "manual", True)
    assert result.conflicts_recorded == 1
    dead_id = stack.one("SELECT id FROM pg2neo.dead_letters WHERE key = '{3}'")
    assert dead_id is not None

    # Status: the counters, three charts and the last batches.
    page.goto(console.url + "/")
    expect(page.locator("h1")).to_have_text("Status")
    expect(page.locator("#dead-letter-count")).to_have_text("1")
    expect(page.locator("svg.chart")).to_have_count(3)
    expect(page.locator("table.batches tbody tr").first).to_contain_text("changes")

    # Dead letters: the list and the detail give the reason and the payload.
    page.click("nav >> text=Dead letters")
    row = page.locator(f"#dead-letter-{dead_id}")
    expect(row).to_contain_text("public.player")
    expect(row).to_contain_text("NULL")
    screenshot(page, "dead-letters")
    page.click(f"#dead-letter-{dead_id} >> a")
    expect(page.locator("h1")).to_have_text(f"Dead letter {dead_id}")
    expect(page.locator("pre.payload")).to_contain_text('"name": "Cy"')

    # The row is fixed out of band (no change event): only the retry can bring it to Neo4j.
    with stack.conn.transaction():
        mark_own_write(stack.conn)
        stack.conn.execute("UPDATE player SET scores = '{4,6}' WHERE id = 3")
    assert stack.one("SELECT count(*) FROM pg2neo.changes") == 0
    page.goto(console.url + "/dead-letters")
    page.click(f"#dead-letter-{dead_id} >> button[name=retry]")
    expect(page.locator(".flash.ok")).to_contain_text("the dead letter is gone")
    expect(page.locator("#no-dead-letters")).to_be_visible()
    assert stack.one("SELECT count(*) FROM pg2neo.dead_letters") == 0
    players = stack.cypher("MATCH (p:Player {id: 3})-[:PLAYS_FOR]->(t:Team) RETURN p.scores AS s, t.id AS t")
    assert [(r["s"], r["t"]) for r in players] == [([4, 6], 1)]

    # Conflicts: both sides, the differing property highlighted; take PostgreSQL.
    page.click("nav >> text=Conflicts")
    conflict_id = stack.one("SELECT id FROM pg2neo.conflicts WHERE resolved_at IS NULL")
    page.click(f"#conflict-{conflict_id} >> a")
    differing = page.locator("table.sides tr.differs")
    expect(differing).to_have_count(1)
    expect(differing).to_contain_text("name")
    expect(differing).to_contain_text("Falcons")
    expect(differing).to_contain_text("edited in graph")
    expect(page.locator("table.sides tr.same")).to_contain_text(["city", "id"])
    screenshot(page, "conflicts")
    page.click("#take-pg")
    expect(page.locator(".flash.ok")).to_contain_text(f"conflict {conflict_id} resolved")
    expect(page.locator("#no-conflicts")).to_be_visible()
    assert stack.cypher("MATCH (t:Team {id: 1}) RETURN t.name AS n")[0]["n"] == "Falcons"
    audit = stack.conn.execute("SELECT counts, outcome FROM pg2neo.audit WHERE kind = 'conflict_resolved'").fetchall()
    assert len(audit) == 1
    counts, outcome = audit[0]
    assert (counts["conflict_id"], counts["take"], counts["by"], counts["scope"]) == (
        conflict_id,
        "pg",
        "console",
        ":Team",
    )
    assert outcome == "took pg"

    # Verify on demand: everything agrees now.
    page.click("nav >> text=Verify")
    page.click("#run-verify")
    expect(page.locator("#verify-verdict")).to_have_text("In sync")
    expect(page.locator("table.verify")).to_contain_text(":Player")
    screenshot(page, "verify")
    page.goto(console.url + "/")
    expect(page.locator("#dead-letter-count")).to_have_text("0")
    expect(page.locator("table.batches tbody tr").first).to_contain_text("conflict_resolved")
    screenshot(page, "status")


def test_verify_page_shows_drift(stack: Stack, console: Console, page: Page) -> None:
    stack.cypher("MATCH (p:Player {id: 2}) SET p.name = 'tampered'")
    page.goto(console.url + "/verify")
    page.click("#run-verify")
    expect(page.locator("#verify-verdict")).to_have_text("Drift: 1")
    expect(page.locator("table.verify tr.differs")).to_contain_text(":Player")
    expect(page.locator("table.verify tr.sample")).to_contain_text("mismatch")


def _csrf(page: Page) -> str:
    value = page.locator("input[name=csrf]").first.get_attribute("value")
    assert value
    return value


def test_posts_without_the_csrf_token_or_from_another_origin_are_refused(
    stack: Stack, console: Console, page: Page
) -> None:
    dead_id = stack.one("SELECT id FROM pg2neo.dead_letters")
    page.goto(console.url + "/dead-letters")
    drop = f"{console.url}/dead-letters/{dead_id}/drop"
    without = page.request.post(drop, form={}, max_redirects=0)
    assert without.status == 403 and "CSRF" in without.text()
    wrong = page.request.post(drop, form={"csrf": "x" * 43}, max_redirects=0)
    assert wrong.status == 403
    foreign = page.request.post(
        drop, form={"csrf": _csrf(page)}, headers={"Origin": "http://evil.example"}, max_redirects=0
    )
    assert foreign.status == 403 and "cross-site" in foreign.text()
    assert stack.one("SELECT count(*) FROM pg2neo.dead_letters") == 1
    # The same request from the console's own page goes through: the refusals above were about the token/origin.
    page.click(f"#dead-letter-{dead_id} >> button[name=drop]")
    expect(page.locator(".flash.ok")).to_contain_text("dropped 1 dead letter")
    assert stack.one("SELECT count(*) FROM pg2neo.dead_letters") == 0


def test_a_foreign_host_name_is_refused_on_loopback(console: Console) -> None:
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 must not reach the console."""
    port = int(console.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": f"evil.example:{port}"})
        refused = conn.getresponse()
        assert refused.status == 400
        refused.read()
        conn.request("GET", "/", headers={"Host": f"localhost:{port}"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_beyond_loopback_the_token_is_required(stack: Stack, page: Page) -> None:
    with pytest.raises(Exception, match="needs a token"):
        ConsoleApp(Backend(stack.dsn, stack.driver, stack.mapping), "0.0.0.0", None)
    with serve(stack, "0.0.0.0", "s3cret-token") as served:
        page.goto(served.url + "/conflicts")
        expect(page.locator("h1")).to_have_text("Log in")
        assert page.request.get(served.url + "/dead-letters").status == 401
        page.fill("input[name=token]", "wrong")
        page.click("form.login button")
        expect(page.locator(".flash.error")).to_contain_text("not this console's")
        page.fill("input[name=token]", "s3cret-token")
        page.click("form.login button")
        expect(page.locator("h1")).to_have_text("Status")
        page.goto(served.url + "/dead-letters")
        expect(page.locator("h1")).to_have_text("Dead letters")
        # A script: the token as a bearer header, on each request.
        request = urllib.request.Request(served.url + "/dead-letters", headers={"Authorization": "Bearer s3cret-token"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(served.url + "/dead-letters", timeout=10)
        refused.value.close()
        assert refused.value.code == 401


def test_the_console_command_serves_and_stops(stack: Stack, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"  # written by the stack fixture
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG2NEO_")},
        "PG2NEO_PG_DSN": stack.dsn,
        "PG2NEO_NEO4J__URI": stack.conns.neo4j_uri,
        "PG2NEO_NEO4J__PASSWORD": stack.conns.neo4j_password,
        "PG2NEO_MAPPING": str(mapping),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pg2neo.console", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.search(r"http://0\.0\.0\.0:(\d+)/", first)
        assert found, first + (process.stderr.read() if process.stderr else "")
        port = int(found.group(1))
        second = process.stdout.readline()
        token = re.search(r"access token: (\S+)", second)
        assert token, second
        url = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        refused.value.close()
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token.group(1)}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read().decode()
        assert "Queue depth" in body and stack.dsn not in body and stack.conns.neo4j_password not in body
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert stack.conns.neo4j_password not in out + err
