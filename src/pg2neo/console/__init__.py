"""The web console (`pg2neo console`): status, dead letters, conflicts and verify in a browser.

Server-rendered pages (Jinja2 templates, inline SVG charts, one stylesheet; no JavaScript, no build step) over the
same functions as the CLI. `app.ConsoleApp` is the WSGI application, `server` serves it, `security` holds the
access rules (token when bound beyond loopback, CSRF token and Origin check on every POST).
"""
