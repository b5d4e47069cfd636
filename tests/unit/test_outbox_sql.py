"""Capture functions pin the session settings that change a key's text form, and only when the key needs it."""

from __future__ import annotations

import pytest

from pg2neo.capture.outbox_sql import _pinned


@pytest.mark.parametrize(
    ("key_types", "pinned"),
    [
        (("bigint",), False),
        (("text", "integer"), False),
        (("uuid",), False),
        (("character varying(20)",), False),
        (("numeric(12,2)",), False),
        (("timestamp with time zone",), True),
        (("date",), True),
        (("bigint", "bytea"), True),
        (("double precision",), True),
        (("interval",), True),
        (("time without time zone",), True),
        (("public.mood",), True),  # an enum is safe, but a user-defined name cannot be told apart from a domain
    ],
)
def test_settings_are_pinned_only_for_keys_whose_text_depends_on_them(key_types: tuple[str, ...], pinned: bool) -> None:
    text = _pinned(key_types, ()).as_string()
    assert ("\"timezone\" = 'UTC'" in text) is pinned
    if pinned:
        assert "\"datestyle\" = 'ISO, YMD'" in text and "\"intervalstyle\" = 'iso_8601'" in text
