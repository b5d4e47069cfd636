"""The demo: a generated multi-tenant content schema (`generate`), its live workload (`workload`) and the
`pg2neo demo` flow that syncs it end to end on the local stack (`flow`)."""

from __future__ import annotations

from pg2neo.demo.flow import mapping_path, run_demo

__all__ = ["mapping_path", "run_demo"]
