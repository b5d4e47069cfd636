"""Who may use the web console, and which requests it accepts (pure: no server, no socket).

- Bound to a loopback address, the console needs no token, but it answers only to a loopback host name, so a page
  elsewhere cannot reach it by pointing a DNS name at 127.0.0.1 (DNS rebinding).
- Bound to any other address, every request needs the token: once per browser session (`?token=`, or the login
  form), or on each request as `Authorization: Bearer <token>`.
- Every POST must carry the session's CSRF token in its form, and a browser's `Origin` (and `Sec-Fetch-Site`) must
  say the request came from the console's own pages. The session cookie is `SameSite=Strict` and `HttpOnly`.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

COOKIE = "pg2neo_console"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name, IPv6 with or without brackets) is this machine's loopback."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def generate_token() -> str:
    return secrets.token_urlsafe(24)


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the answer time tells nothing about how much of a guess was right."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def host_name(host_header: str) -> str:
    """The name part of a `Host` header (`127.0.0.1:8089` -> `127.0.0.1`, `[::1]:80` -> `::1`)."""
    return urlsplit(f"//{host_header.strip()}").hostname or ""


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def cross_site_reason(
    method: str, host_header: str, origin: str | None, fetch_site: str | None, scheme: str = "http"
) -> str | None:
    """Why a state-changing request must be refused as cross-site, or None when its origin is the console's own.

    A browser sends `Origin` with every POST (and `Sec-Fetch-Site`); a client that sends neither (curl, a script
    with the token) is left to the CSRF token, which only the console's own pages know."""
    if method != "POST":
        return None
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site!r}"
    if origin is not None and origin != f"{scheme}://{host_header}":
        return f"Origin {origin!r} is not this console ({scheme}://{host_header})"
    return None


@dataclass
class Session:
    """One browser's session: its CSRF token, whether it showed the access token, and messages for its next page."""

    id: str
    csrf: str
    authenticated: bool = False
    flashes: list[tuple[str, str]] = field(default_factory=list)
    last_seen: float = field(default_factory=time.monotonic)

    def csrf_matches(self, given: str | None) -> bool:
        return token_matches(given, self.csrf)

    def flash(self, level: str, text: str) -> None:
        self.flashes.append((level, text))

    def take_flashes(self) -> list[tuple[str, str]]:
        taken, self.flashes = self.flashes, []
        return taken


class Sessions:
    """Sessions kept in memory (a restart of the console logs everyone out); at most `limit`, the oldest go first."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                self._sessions.move_to_end(session_id)
                session.last_seen = time.monotonic()
            return session

    def new(self) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        return session
