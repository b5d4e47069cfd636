"""`make bench` / `make bench-quick`: run every benchmark on the bench's own stack and write a summary.

Order: snapshot (builds the 1M-row database), memory (reuses it), write cost, live sync + profile, trigger mode vs
the Kafka sink (its own Kafka; `make bench-kafka`); then, after the
bench stack is stopped, the optional modules `bench.bench_verify` and `bench.bench_strict` if they exist and expose
`main(quick: bool) -> dict` (they start whatever servers they need themselves). The full-size verify benchmark
(about 20 minutes at a million rows, for the verify issue rather than this suite's goals) runs only when asked
for: `make bench-verify`; `make bench-quick` includes its small variant. Results: bench/results/*.json,
*.png, and summary[_quick].json / summary[_quick].md (the table for README.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import bench_kafka, bench_live, bench_memory, bench_snapshot, bench_write_cost
from bench.common import NOISE_NOTE, RESULTS, Bench, bench_stack, log, machine

OURS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "snapshot": bench_snapshot.main,
    "memory": bench_memory.main,
    "write_cost": bench_write_cost.main,
    "live": bench_live.main,
    "kafka": bench_kafka.main,  # trigger mode vs Debezium -> Kafka -> pg2neo sink (1 and 2 workers)
}
OPTIONAL = ("bench_verify", "bench_strict")
ON_REQUEST = {"bench_verify"}  # full size: only with --only (make bench-verify)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs (make bench-quick)")
    parser.add_argument("--only", nargs="*", default=None, help=f"subset (and order) of {[*OURS, *OPTIONAL]}")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per measurement (medians reported)")
    parser.add_argument("--backlogs", type=int, nargs="*", default=None, help="memory benchmark backlog sizes")
    args = parser.parse_args(argv)
    wanted = {n if n in OURS or n.startswith("bench_") else f"bench_{n}" for n in args.only} if args.only else None
    started = time.monotonic()
    summary: dict[str, Any] = {"quick": args.quick, "machine": machine(), "timings_s": {}, "errors": {}}
    with bench_stack(args.quick) as bench:
        bench.runs = args.runs
        bench.backlogs = args.backlogs
        order = [n for n in (args.only or OURS) if n in OURS]
        for name in order:
            fn = OURS[name]
            t0 = time.monotonic()
            log(f"== {name}")
            try:
                summary.update(fn(bench))
            except Exception:
                summary["errors"][name] = traceback.format_exc()
                log(f"{name} FAILED:\n{summary['errors'][name]}")
            summary["timings_s"][name] = round(time.monotonic() - t0, 1)
    for name in OPTIONAL:
        if wanted is not None and name not in wanted:
            continue
        if wanted is None and name in ON_REQUEST and not args.quick:
            continue
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        optional = getattr(module, "main", None)
        if not callable(optional):
            continue
        t0 = time.monotonic()
        log(f"== {name}")
        try:
            summary[name] = optional(args.quick)
        except Exception:
            summary["errors"][name] = traceback.format_exc()
            log(f"{name} FAILED:\n{summary['errors'][name]}")
        summary["timings_s"][name] = round(time.monotonic() - t0, 1)
    summary["total_s"] = round(time.monotonic() - started, 1)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    earlier = RESULTS / f"summary{suffix}.json"
    if args.only and earlier.exists():
        # A partial run updates the benchmarks it ran and keeps the others' latest results.
        kept = json.loads(earlier.read_text())
        summary = {
            **kept,
            **{k: v for k, v in summary.items() if k not in ("timings_s", "errors")},
            "timings_s": {**kept.get("timings_s", {}), **summary["timings_s"]},
            "errors": {
                **{k: v for k, v in kept.get("errors", {}).items() if k not in summary["timings_s"]},
                **summary["errors"],
            },
        }
    (RESULTS / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = markdown(summary)
    (RESULTS / f"summary{suffix}.md").write_text(table)
    print(table)
    log(f"done in {summary['total_s']:.0f}s; results in {RESULTS}")
    return 1 if summary["errors"] else 0


def _f(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _trigger_us(w: dict[str, Any]) -> str:
    cost = w.get("trigger_us_per_statement")
    if not cost:
        return ""
    return f" (trigger +{cost['update']:.1f} µs per UPDATE, +{cost['insert']:.1f} µs per INSERT)"


def markdown(s: dict[str, Any]) -> str:
    """The results table for README.md."""
    m = s["machine"]
    lines = [
        f"Measured with `make bench{'-quick' if s['quick'] else ''}` on {m['cores_logical']} cores, "
        f"{m['memory_gb']} GB ({m['cpu_model']}). {NOISE_NOTE}",
        "",
        "| Benchmark | Figure (median of ≥3 runs) | Goal | Met |",
        "|---|---|---|---|",
    ]
    if "snapshot" in s:
        r, x, g = s["snapshot"]["routes"], s["snapshot"]["ratios"], s["snapshot"]["goals_met"]
        lines += [
            f"| Snapshot, {s['snapshot']['rows_total']:,} rows | pg2neo {_f(r['pg2neo']['rows_per_s'])} rows/s "
            f"({_f(r['pg2neo']['nodes_per_s'])} nodes/s, {_f(r['pg2neo']['relationships_per_s'])} rels/s) | | |",
            f"| vs naive (1 tx/row, {_f(r['naive']['rows_per_s'])} rows/s, sampled) | {x['vs_naive']:.1f}× | ≥ 20× | "
            f"{'yes' if g['vs_naive >= 20'] else 'no'} |",
            f"| vs APOC periodic.iterate ({_f(r['apoc']['rows_per_s'])} rows/s) | {x['vs_apoc']:.2f}× | ≥ 1.2× | "
            f"{'yes' if g.get('vs_apoc >= 1.2') else 'no'} |",
            f"| vs ceiling UNWIND CREATE ({_f(r['ceiling']['rows_per_s'])} rows/s) | {x['vs_ceiling']:.2f}× | ≥ 0.5× | "
            f"{'yes' if g['vs_ceiling >= 0.5'] else 'no'} |",
        ]
        if "bulk" in r:
            lines.append(
                f"| `snapshot --bulk` ({_f(r['bulk']['rows_per_s'])} rows/s) vs APOC | {x['bulk_vs_apoc']:.2f}× "
                f"| ≥ 5× | {'yes' if g.get('bulk_vs_apoc >= 5') else 'no'} |"
            )
    if "live" in s:
        for step in s["live"]["steps"]:
            lag = step["lag_s"]
            lines.append(
                f"| Live sync, {step['rate']:,} tx/s offered | applied {_f(step['applied_per_s'])} changes/s; lag p50 "
                f"{_f(lag['p50'], 3)} s, p95 {_f(lag['p95'], 3)} s, p99 {_f(lag['p99'], 3)} s; "
                f"{'bounded' if step['bounded'] else 'NOT bounded'} | 5,000/s with p99 < 1 s | |"
            )
        lines[-1] = lines[-1][: -len("| |")] + f"| {'yes' if s['live']['goal_met'] else 'no'} |"
    if "write_cost" in s:
        w = s["write_cost"]
        lines.append(
            f"| Write-path cost (pgbench, update-heavy) | {_f(w['summary']['with_triggers']['tps_median'])} vs "
            f"{_f(w['summary']['without_triggers']['tps_median'])} TPS: {w['tps_loss_pct']:.1f}% fewer"
            f"{_trigger_us(w)} | ≤ 10% | "
            f"{'yes' if w['goal_met'] else 'no'} |"
        )
    if "memory" in s:
        mem = s["memory"]
        peaks = ", ".join(f"{int(k):,}: {_f(v)} MB" for k, v in mem["peak_rss_mb"].items())
        ok = all(mem["goals_met"].values())
        lines.append(
            f"| Peak RSS of `run --until-empty` by backlog | {peaks} | < 300 MB, flat | {'yes' if ok else 'no'} |"
        )
    strict = s.get("bench_strict", {}).get("strict")
    if strict:
        ratio = strict["ratio"]["median"]
        lines.append(
            f"| Strict commit vs plain commit, median | {_f(strict['strict_ms']['median'], 1)} ms vs "
            f"{_f(strict['plain_ms']['median'], 1)} ms: {ratio:.1f}× | ≤ 5× | {'yes' if ratio <= 5 else 'no'} |"
        )
    lines += bench_kafka.markdown_rows(s)
    for name in s.get("errors", {}):
        lines.append(f"| {name} | failed (see summary JSON) | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
