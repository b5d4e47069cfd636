"""The README's main job (`make demo` → `pg2neo demo`) runs end to end and both sides match."""

from __future__ import annotations

import io

from rich.console import Console

from pg2neo.demo.flow import run_demo
from pg2neo.devstack.stack import LocalStack
from pg2neo.runtime.connections import Connections
from pg2neo.settings import DevSettings, Settings


def test_demo_syncs_and_both_sides_match(owned_stack: LocalStack, graph: Connections) -> None:
    out = io.StringIO()
    console = Console(file=out, width=160)
    settings = Settings(dev=DevSettings(state_dir=owned_stack.state_dir, cache_dir=owned_stack.dev.cache_dir))
    run_demo(settings, console, scale=30, live_operations=60)  # raises if any count differs
    text = out.getvalue()
    assert "6. PostgreSQL vs Neo4j" in text
    assert "NO" not in text.split("6. PostgreSQL vs Neo4j", 1)[1].split("Threads with", 1)[0]
    assert "dead letters: 0" in text
