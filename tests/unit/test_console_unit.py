"""The web console's pure parts: access rules, charts, the side-by-side comparison, and the refusals the WSGI app
makes before it touches a server (no socket, no database)."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any, cast
from wsgiref.util import setup_testing_defaults

import pytest
from neo4j import Driver
from neo4j.time import DateTime

from pg2neo.console import charts, security
from pg2neo.console.app import Backend, ConsoleApp, side_by_side
from pg2neo.errors import Pg2NeoError
from pg2neo.mapping.plan import Mapping


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("console.example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert security.is_loopback(host) is loopback


def test_host_name_of_a_host_header() -> None:
    assert security.host_name("127.0.0.1:8089") == "127.0.0.1"
    assert security.host_name("[::1]:8089") == "::1"
    assert security.host_name("evil.example") == "evil.example"


def test_cross_site_requests() -> None:
    host = "127.0.0.1:8089"
    assert security.cross_site_reason("GET", host, "http://evil.example", "cross-site") is None
    assert security.cross_site_reason("POST", host, "http://127.0.0.1:8089", "same-origin") is None
    assert security.cross_site_reason("POST", host, None, None) is None  # a script: left to the CSRF token
    assert "Origin" in (security.cross_site_reason("POST", host, "http://evil.example", None) or "")
    assert "Origin" in (security.cross_site_reason("POST", host, "http://127.0.0.1:9999", None) or "")
    assert "Sec-Fetch-Site" in (security.cross_site_reason("POST", host, None, "cross-site") or "")
    assert "Sec-Fetch-Site" in (security.cross_site_reason("POST", host, None, "same-site") or "")


def test_tokens_and_sessions() -> None:
    token = security.generate_token()
    assert len(token) >= 32 and security.token_matches(token, token)
    assert not security.token_matches(None, token) and not security.token_matches(token[:-1], token)
    assert security.bearer("Bearer abc") == "abc" and security.bearer("Basic abc") is None
    sessions = security.Sessions(limit=2)
    first, second, third = sessions.new(), sessions.new(), sessions.new()
    assert sessions.get(first.id) is None  # the oldest went
    assert sessions.get(second.id) is second and sessions.get(third.id) is third
    assert second.csrf != third.csrf and second.csrf_matches(second.csrf) and not second.csrf_matches(None)
    second.flash("ok", "done")
    assert second.take_flashes() == [("ok", "done")] and second.take_flashes() == []


def test_nice_ceiling() -> None:
    assert [charts.nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 12, 240, 2600)] == [1, 0.5, 1, 5, 10, 20, 250, 5000]


def test_charts_escape_text_and_scale_bars() -> None:
    line = charts.line_chart("<script>x</script>", "s", 0, 3600, [(100, 1.0), (105, 4.0)])
    assert "<script>" not in line and "&lt;script&gt;" in line and "<polyline" in line
    empty = charts.line_chart("Lag", "s", 0, 3600, [])
    assert "no samples yet" in empty
    bars = charts.bar_chart("Throughput", "per minute", 0, 3600, [(0, 10.0, 0.0), (60, 5.0, 5.0)])
    heights = [float(h) for h in re.findall(r'<rect class="bar[^"]*" [^>]*height="([\d.]+)"', bars)]
    assert len(heights) == 3 and heights[0] == pytest.approx(heights[1] + heights[2])
    assert "nothing applied" in charts.bar_chart("T", "", 0, 3600, [(0, 0.0, 0.0)])


def test_side_by_side_compares_as_verify_does() -> None:
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    rows = side_by_side(
        {"id": 1, "name": "pg", "at": at, "only_pg": True},
        {"id": 1, "name": "graph", "at": DateTime.from_native(at), "only_neo4j": [1, 2]},
    )
    by_name = {r["name"]: r for r in rows}
    assert not by_name["id"]["differs"] and not by_name["at"]["differs"]
    assert by_name["name"]["differs"] and by_name["only_pg"]["differs"] and by_name["only_neo4j"]["differs"]
    assert by_name["only_pg"]["neo4j"] is None and by_name["only_neo4j"]["neo4j"] == "[1, 2]"
    assert all(r["differs"] for r in side_by_side(None, {"id": 1}))


# -- the WSGI app's refusals (none of them reaches a server) ------------------------------------------------------

BACKEND = Backend("", cast(Driver, None), cast(Mapping, None))


Answer = tuple[str, dict[str, str], str]


def call(app: ConsoleApp, target: str, method: str = "GET", body: str = "", **headers: str) -> Answer:
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    environ["HTTP_HOST"] = "127.0.0.1:8089"
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    environ["wsgi.input"] = io.BytesIO(body.encode())
    environ["CONTENT_LENGTH"] = str(len(body))
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(response_headers)

    text = b"".join(app(environ, start_response)).decode()
    return answer["status"], answer["headers"], text


def test_beyond_loopback_a_token_is_required() -> None:
    with pytest.raises(Pg2NeoError, match="needs a token"):
        ConsoleApp(BACKEND, "0.0.0.0", None)


def test_refusals_before_any_server_is_touched() -> None:
    app = ConsoleApp(BACKEND)
    status, _, _ = call(app, "/", HOST="evil.example:8089")
    assert status.startswith("400")
    status, headers, css = call(app, "/static/console.css")
    assert status.startswith("200") and headers["Content-Type"].startswith("text/css") and "svg.chart" in css
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, _, text = call(app, "/dead-letters/1/drop", "POST", "csrf=forged")
    assert status.startswith("403") and "CSRF" in text
    status, _, text = call(app, "/dead-letters/1/drop", "POST", "", ORIGIN="http://evil.example")
    assert status.startswith("403") and "cross-site" in text


def test_the_token_login_page() -> None:
    app = ConsoleApp(BACKEND, "0.0.0.0", "the-token")
    status, headers, page = call(app, "/conflicts")
    assert status.startswith("401") and "Log in" in page and "the-token" not in page
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    status, _, page = call(app, "/login", "POST", f"csrf={csrf.group(1)}&token=wrong", COOKIE=cookie)
    assert status.startswith("401") and "not this console" in page
    status, headers, _ = call(app, "/login", "POST", f"csrf={csrf.group(1)}&token=the-token", COOKIE=cookie)
    assert status.startswith("303") and headers["Location"] == "/"
    status, headers, _ = call(app, "/verify?token=the-token")  # a new browser, with the printed link
    assert status.startswith("303") and headers["Location"] == "/verify"
