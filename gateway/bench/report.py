"""The bench's results as JSON (everything measured, with the run's conditions) and as one
Markdown table (the figures against the targets of docs/performance.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATABASES = ("sqlite", "postgresql")
DB_TITLES = {"sqlite": "SQLite (embedded default)", "postgresql": "PostgreSQL"}

# The targets of the performance issue, on the bench machine.
TARGET_INGEST_RATIO = 0.6
TARGET_P99_MS_AT_200 = 50.0
TARGET_GROWTH_RATIO = 0.9
TARGET_PACK_1000_SECONDS = 5.0
TARGET_RSS_MIB = 250.0


def figure_keys(rates: list[int], growth: list[int], pack_sizes: list[int]) -> list[str]:
    """Every figure a run reports, as dotted paths into the JSON: the smoke test's checklist.
    A part that could not run (PostgreSQL unreachable, no pack renderer) still has its keys,
    with a reason beside them instead of numbers."""
    keys = [
        "ceiling.per_second",
        "floor.per_second",
        "floor.per_cpu_second",
        "floor.ratio_bound",
        "required.validations_per_second",
        "required.receipts_per_second",
        "required.stored_per_cpu_second",
        "required.ratio_bound",
        "peak_rss_mib",
    ]
    for db in DATABASES:
        base = f"ingest.{db}"
        keys += [
            f"{base}.closed.accepted_per_second",
            f"{base}.closed.errors",
            f"{base}.closed_errors",
            f"{base}.ingest_over_ceiling",
            f"{base}.peak_rss_mib",
        ]
        for rate in rates:
            for q in ("p50", "p95", "p99"):
                keys.append(f"{base}.open.{rate}.latency_ms.{q}")
            keys.append(f"{base}.open.{rate}.errors")
        for size in growth:
            keys.append(f"growth.{db}.runs.{size}.accepted_per_second")
        keys.append(f"growth.{db}.ratio")
    for size in pack_sizes:
        keys += [f"pack.{size}.html_seconds", f"pack.{size}.pdf_seconds"]
    return keys


def lookup(data: Any, dotted: str) -> Any:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _get(data: Any, dotted: str) -> Any:
    try:
        return lookup(data, dotted)
    except KeyError:
        return None


def _met(value: Any, target: float, higher_is_better: bool) -> str:
    if not isinstance(value, int | float):
        return ""
    ok = value >= target if higher_is_better else value <= target
    return " ✅" if ok else " ❌"


def markdown(result: dict[str, Any]) -> str:
    rates: list[int] = result["config"]["rates"]
    growth: list[int] = result["config"]["growth"]
    pack_sizes: list[int] = result["config"]["pack_sizes"]
    ceiling = _get(result, "ceiling.per_second")
    lines = [
        f"Run of {result['started_at']} on {result['machine']['cpus']} CPUs "
        f"({result['machine']['python']}, SQLite {result['machine']['sqlite']}), "
        f"{_num(result['seconds'], 0)} s in all; load average before "
        f"{result['machine']['load_before']}, after {result['machine']['load_after']}.",
        "",
        "| figure | " + " | ".join(DB_TITLES[db] for db in DATABASES) + " | target |",
        "|---|" + "---:|" * len(DATABASES) + "---|",
        f"| ceiling: envelopes opened per second, one core | {_num(ceiling)} | (same) | |",
    ]
    floor = result.get("floor", {})
    if floor.get("skipped"):
        lines.append(f"| HTTP floor | skipped: {floor['skipped']} | | |")
    else:
        lines += [
            f"| HTTP floor: empty handler, same mTLS stack, one core, per second "
            f"| {_num(floor.get('per_second'))} | (same) | |",
            f"| HTTP floor: requests per second of the server's own CPU "
            f"| {_num(floor.get('per_cpu_second'))} | (same) | |",
            f"| bound from the floor: floor / (floor + ceiling) "
            f"| {_num(floor.get('ratio_bound'), 2)} | (same) | |",
        ]
    required = result.get("required", {})
    lines += [
        f"| schema validations per second, one core | "
        f"{_num(required.get('validations_per_second'))} | (same) | |",
        f"| receipts signed per second, one core | "
        f"{_num(required.get('receipts_per_second'))} | (same) | |",
        f"| notifications stored per second of CPU (batches of 64, durable, audited) | "
        f"{_num(required.get('stored_per_cpu_second'))} | (same) | |",
        f"| bound from floor + open + validation + receipt + storing (nothing else costing "
        f"anything) | "
        f"{_num(required.get('ratio_bound'), 2)} | (same) | |",
    ]

    def row(label: str, path: str, target: str = "", digits: int = 1, check: Any = None) -> None:
        cells = []
        for db in DATABASES:
            section = path.split(".", 1)[0]
            skipped = _get(result, f"{section}.{db}.skipped")
            value = _get(result, path.format(db=db))
            mark = check(value) if check else ""
            cells.append("skipped" if skipped and value is None else _num(value, digits) + mark)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row(
        "ingest, closed loop: accepted per second (best of the concurrencies)",
        "ingest.{db}.closed.accepted_per_second",
    )
    row("closed loop: requests in flight of the best", "ingest.{db}.closed.concurrency", digits=0)
    row(
        "ingest / ceiling",
        "ingest.{db}.ingest_over_ceiling",
        f">= {TARGET_INGEST_RATIO}",
        2,
        lambda v: _met(v, TARGET_INGEST_RATIO, True),
    )
    row("closed loop: p99 ms (at that concurrency)", "ingest.{db}.closed.latency_ms.p99")
    row("closed loop: errors (every concurrency)", "ingest.{db}.closed_errors", "0", 0)
    for rate in rates:
        base = f"ingest.{{db}}.open.{rate}"
        row(f"open loop {rate}/s: accepted per second", f"{base}.accepted_per_second")
        row(f"open loop {rate}/s: p50 ms", f"{base}.latency_ms.p50")
        row(f"open loop {rate}/s: p95 ms", f"{base}.latency_ms.p95")
        if rate == 200:
            row(
                f"open loop {rate}/s: p99 ms",
                f"{base}.latency_ms.p99",
                f"<= {TARGET_P99_MS_AT_200:g}",
                check=lambda v: _met(v, TARGET_P99_MS_AT_200, False),
            )
        else:
            row(f"open loop {rate}/s: p99 ms", f"{base}.latency_ms.p99")
        row(f"open loop {rate}/s: errors", f"{base}.errors", "0", 0)
    for size in growth:
        row(
            f"growth: accepted per second with {size:,} stored",
            f"growth.{{db}}.runs.{size}.accepted_per_second",
        )
    if len(growth) >= 2:
        row(
            f"growth ratio {growth[-1]:,} / {growth[0]:,}",
            "growth.{db}.ratio",
            f">= {TARGET_GROWTH_RATIO}",
            2,
            lambda v: _met(v, TARGET_GROWTH_RATIO, True),
        )
    row(
        "peak RSS of the gateway, MiB",
        "ingest.{db}.peak_rss_mib",
        f"<= {TARGET_RSS_MIB:g}",
        check=lambda v: _met(v, TARGET_RSS_MIB, False),
    )
    pack = result.get("pack", {})
    if not pack.get("available"):
        lines.append(
            f"| agenda pack (HTML + PDF) | not available: {pack.get('reason', '')} | | "
            f"<= {TARGET_PACK_1000_SECONDS:g} s for 1,000 |"
        )
    else:
        for size in pack_sizes:
            html = _get(result, f"pack.{size}.html_seconds")
            pdf = _get(result, f"pack.{size}.pdf_seconds")
            target = f"<= {TARGET_PACK_1000_SECONDS:g} s" if size == 1000 else ""
            if html is None or pdf is None:
                problem = _get(result, f"pack.{size}.problem") or "not measured"
                cell = f"{problem}{' ❌' if size == 1000 else ''}"
            else:
                total = html + pdf
                mark = _met(total, TARGET_PACK_1000_SECONDS, False) if size == 1000 else ""
                rss = _get(result, f"pack.{size}.peak_rss_mib")
                cell = (
                    f"{_num(html, 2)} + {_num(pdf, 2)} = {_num(total, 2)}{mark} "
                    f"(peak RSS {_num(rss)} MiB)"
                )
            lines.append(
                f"| agenda pack, {size:,} items: HTML s + PDF s | {cell} | (no database) | "
                f"{target} |"
            )
    lines.append(
        f"| peak RSS over the whole run, MiB | {_num(result.get('peak_rss_mib'))} | | "
        f"<= {TARGET_RSS_MIB:g} |"
    )
    for section in ("ingest", "growth"):
        for db in DATABASES:
            reason = _get(result, f"{section}.{db}.skipped")
            if reason:
                lines += ["", f"{section.capitalize()} on {DB_TITLES[db]} was skipped: {reason}."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    md_path = out / "bench.md"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def empty_load() -> dict[str, Any]:
    return {
        "accepted_per_second": None,
        "errors": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None, "max": None},
    }


def skipped_floor(reason: str) -> dict[str, Any]:
    return {"skipped": reason, "per_second": None, "per_cpu_second": None, "ratio_bound": None}


def skipped_ingest(reason: str, rates: list[int]) -> dict[str, Any]:
    """The keys of an ingest section that did not run, so that every figure has its place."""
    return {
        "skipped": reason,
        "closed": empty_load(),
        "closed_errors": None,
        "open": {str(rate): empty_load() for rate in rates},
        "ingest_over_ceiling": None,
        "peak_rss_mib": None,
    }


def skipped_growth(reason: str, sizes: list[int]) -> dict[str, Any]:
    return {
        "skipped": reason,
        "runs": {str(size): empty_load() for size in sizes},
        "ratio": None,
    }


def unavailable_pack(reason: str, sizes: list[int]) -> dict[str, Any]:
    return {
        "available": False,
        "reason": reason,
        **{str(size): {"html_seconds": None, "pdf_seconds": None} for size in sizes},
    }
