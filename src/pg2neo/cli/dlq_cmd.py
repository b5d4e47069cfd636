"""CLI commands registered on the main app (see cli/main.py)."""

from __future__ import annotations
