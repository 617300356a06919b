"""`cmr-gateway-bench`: the gateway measured against its own ceiling (docs/performance.md).

Everything runs on 127.0.0.1 with bounded counts and durations, and every process it starts
stops by itself: the gateway (`python -m gateway serve`, the scheduler off) pinned to one CPU,
the load generator (`python -m gateway.bench.loadgen`) pinned to the other, a fresh installation
for each part, and for PostgreSQL a database of its own, created and dropped here."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.bench import ceiling, report
from gateway.bench.harness import (
    FloorProcess,
    GatewayProcess,
    Installation,
    cpu_seconds,
    make_installation,
    pg_admin_url,
    pg_database,
    pg_reachable,
    run_loadgen,
)

GATEWAY_CPU = 0
LOADGEN_CPU = 1
MAX_SEALED = 40_000
# The HTTP floor sends the same few envelopes over and over (it opens none): enough for any
# rate one core of this stack can answer.
FLOOR_RATE = 8000.0
FLOOR_DISTINCT = 500
REQUIRED_SECONDS = 2.0


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cmr-gateway-bench",
        description="Measure the gateway against its one-core ceiling (docs/performance.md).",
    )
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--ceiling-seconds", type=float, default=10.0)
    p.add_argument("--closed-seconds", type=float, default=15.0)
    p.add_argument("--floor-seconds", type=float, default=8.0, help="0: no HTTP floor")
    p.add_argument("--open-seconds", type=float, default=10.0)
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=[64, 256],
        help="closed loop: requests in flight, each tried; the best is the maximum",
    )
    p.add_argument("--rates", type=_ints, default=[50, 100, 200, 400], help="open loop, per s")
    p.add_argument("--growth", type=_ints, default=[1000, 100_000], help="rows stored first")
    p.add_argument("--growth-seconds", type=float, default=6.0)
    p.add_argument(
        "--growth-repeats",
        type=int,
        default=2,
        help="closed-loop runs at each size; the best counts (a shared machine's noise only "
        "ever slows a run down)",
    )
    p.add_argument(
        "--growth-databases", default="sqlite,postgresql", help="where to measure growth"
    )
    p.add_argument("--pack-sizes", type=_ints, default=[100, 1000, 10_000])
    p.add_argument("--databases", default="sqlite,postgresql")
    p.add_argument("--pack-timeout", type=float, default=90.0, help="seconds per pack size")
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=570.0,
        help="the pack sizes get what remains of this; the whole run stays within it",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the gateway in closed loop")
    p.add_argument("--keep", action="store_true", help="keep the installations afterwards")
    return p


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=self._ensure(self.out)))
        self.peaks: list[float] = []
        self.ceiling_rate: float = 0.0

    @staticmethod
    def _ensure(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- the parts --------------------------------------------------------------------------

    def closed(
        self,
        gw: GatewayProcess,
        seconds: float,
        concurrency: int,
        on_ready: Any = None,
        distinct: int = 0,
    ) -> dict[str, Any]:
        a = self.args
        if distinct:
            count = int(FLOOR_RATE * (seconds + a.warmup_seconds))
        else:
            # Enough for a gateway at the target (0.6 x ceiling); one that outruns the supply
            # is flagged "exhausted" in the result, its rate then a lower bound.
            rate = max(report.TARGET_INGEST_RATIO * self.ceiling_rate, 100.0)
            count = int(min(MAX_SEALED, max(200, rate * (seconds + a.warmup_seconds))))
        return run_loadgen(
            gw,
            [
                "--mode",
                "closed",
                "--concurrency",
                str(concurrency),
                "--count",
                str(count),
                "--duration",
                str(seconds),
                "--warmup",
                str(a.warmup_seconds),
                "--distinct",
                str(distinct),
            ],
            timeout=seconds + a.warmup_seconds + 180,
            cpu=LOADGEN_CPU,
            on_ready=on_ready,
        )

    def open(self, gw: GatewayProcess, rate: int) -> dict[str, Any]:
        a = self.args
        warmup = a.warmup_seconds
        return run_loadgen(
            gw,
            [
                "--mode",
                "open",
                "--rate",
                str(rate),
                "--duration",
                str(a.open_seconds),
                "--warmup",
                str(warmup),
            ],
            timeout=a.open_seconds + warmup + 180,
            cpu=LOADGEN_CPU,
        )

    def floor(self, inst: Installation) -> dict[str, Any]:
        """The server stack alone on the gateway's core (gateway.bench.floor), and the bound it
        puts on ingest / ceiling: a request costs at least the floor's work and an open."""
        runs = []
        with FloorProcess(inst, cpu=GATEWAY_CPU) as fl:
            for concurrency in self.args.concurrency:
                at_ready: dict[str, float | None] = {}
                run = self.closed(
                    fl,
                    self.args.floor_seconds,
                    concurrency,
                    on_ready=lambda at_ready=at_ready: at_ready.update(cpu=cpu_seconds(fl.pid)),
                    distinct=FLOOR_DISTINCT,
                )
                before, after = at_ready.get("cpu"), cpu_seconds(fl.pid)
                run["concurrency"] = concurrency
                # Requests per second of the server's own CPU: the load generator, on its one
                # core, may be what limits the rate, and then the rate alone would overstate
                # what the stack costs. The warm-up's connections opened before the ready file.
                used = after - before if after is not None and before is not None else 0.0
                run["per_cpu_second"] = round(run["completed"] / used, 1) if used > 0 else None
                runs.append(run)
        best = max(runs, key=lambda r: r["per_cpu_second"] or 0)
        rate = best["per_cpu_second"]
        return {
            "runs": runs,
            "per_second": best["accepted_per_second"],
            "per_cpu_second": rate,
            "concurrency": best["concurrency"],
            "errors": sum(r["errors"] or 0 for r in runs),
            "ratio_bound": round(rate / (rate + self.ceiling_rate), 3) if rate else None,
            "peak_rss_mib": fl.peak_rss_mib,
        }

    def required(self, inst: Installation, floor: dict[str, Any]) -> dict[str, Any]:
        """Validation, the signed receipt and the durable insert, timed on the gateway's core;
        with the floor and the ceiling, the most ingest / ceiling could be if nothing else
        (logging, metrics, middleware, encryption at rest) cost anything."""
        self.say("required work: validation, receipt signing and storing, on one core")
        seconds = max(0.2, min(REQUIRED_SECONDS, self.args.ceiling_seconds / 4))
        storage = make_installation(self.work, "sqlite")
        found = ceiling.required_work(inst, storage, seconds, cpu=GATEWAY_CPU)
        rates = [
            self.ceiling_rate,
            floor.get("per_cpu_second"),
            found["validations_per_second"],
            found["receipts_per_second"],
            found["stored_per_cpu_second"],
        ]
        found["ratio_bound"] = (
            round((1 / self.ceiling_rate) / sum(1 / float(r) for r in rates), 3)
            if all(rates)
            else None
        )
        self.say(
            f"required work: {found['validations_per_second']} validations/s, "
            f"{found['receipts_per_second']} receipts/s, {found['stored_per_cpu_second']} "
            f"stored per CPU second; with the floor, ingest / ceiling can be at most "
            f"{found['ratio_bound']}"
        )
        return found

    def ingest(self, inst: Installation) -> dict[str, Any]:
        result: dict[str, Any] = {"open": {}}
        with GatewayProcess(inst, cpu=GATEWAY_CPU) as gw:
            runs = []
            for concurrency in self.args.concurrency:
                self.say(f"{inst.kind}: closed loop, {concurrency} in flight")
                run = self.closed(gw, self.args.closed_seconds, concurrency)
                run["concurrency"] = concurrency
                runs.append(run)
                self.say(f"{inst.kind}: {run['accepted_per_second']} accepted/s")
            result["closed_runs"] = runs
            result["closed"] = max(runs, key=lambda r: r["accepted_per_second"] or 0)
            result["closed_errors"] = sum(r["errors"] or 0 for r in runs)
            for rate in self.args.rates:
                self.say(f"{inst.kind}: open loop at {rate}/s")
                run = self.open(gw, rate)
                result["open"][str(rate)] = run
                self.say(
                    f"{inst.kind}: {rate}/s p50 {run['latency_ms']['p50']} ms, "
                    f"p99 {run['latency_ms']['p99']} ms, errors {run['errors']}"
                )
            if self.args.profile:
                result["profile"] = self.profile(gw, inst.kind)
        result["peak_rss_mib"] = gw.peak_rss_mib
        if gw.peak_rss_mib is not None:
            self.peaks.append(gw.peak_rss_mib)
        rate = result["closed"]["accepted_per_second"]
        result["ingest_over_ceiling"] = round(rate / self.ceiling_rate, 3)
        return result

    def profile(self, gw: GatewayProcess, kind: str) -> dict[str, Any]:
        """A separate closed-loop run under py-spy (it slows what it watches, so its rate is
        not the figure), recorded from the moment the load generator is ready."""
        from gateway.bench import profile

        if profile.py_spy() is None:
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        seconds = min(self.args.closed_seconds, 10.0)
        raw = self.out / f"profile-{kind}.txt"
        spies: list[subprocess.Popen[bytes]] = []

        def start() -> None:
            spies.append(profile.record(gw.pid, seconds + self.args.warmup_seconds, raw))

        self.say(f"{kind}: closed loop under py-spy")
        try:
            run = self.closed(gw, seconds, max(self.args.concurrency), on_ready=start)
        finally:
            for spy in spies:
                try:
                    spy.wait(timeout=seconds + 60)
                except subprocess.TimeoutExpired:
                    spy.kill()
        text = raw.read_text() if raw.exists() else ""
        (self.out / f"profile-{kind}.md").write_text(profile.markdown(text, 40) + "\n")
        return {
            "raw": str(raw),
            "top": str(self.out / f"profile-{kind}.md"),
            "accepted_per_second_under_profiler": run["accepted_per_second"],
        }

    def growth(self, kind: str, make: Any) -> dict[str, Any]:
        """One installation and one gateway process; rows are added while it runs (idle
        between the runs), as they accumulate in production."""
        from gateway.bench import seed

        sizes = sorted(self.args.growth)
        result: dict[str, Any] = {"runs": {}, "seeding": {}}
        inst: Installation = make()
        with GatewayProcess(inst, cpu=GATEWAY_CPU) as gw:
            for size in sizes:
                self.say(f"growth {kind}: seeding to {size:,} rows")
                seeded = seed.seed(inst, size)
                result["seeding"][str(size)] = seeded
                self.say(f"growth {kind}: closed loop with {seeded['stored']:,} stored")
                runs = [
                    self.closed(gw, self.args.growth_seconds, max(self.args.concurrency))
                    for _ in range(max(1, self.args.growth_repeats))
                ]
                run = max(runs, key=lambda r: r["accepted_per_second"] or 0)
                run["stored_before"] = seeded["stored"]
                run["all_accepted_per_second"] = [r["accepted_per_second"] for r in runs]
                result["runs"][str(size)] = run
                self.say(f"growth {kind}: {run['all_accepted_per_second']} accepted/s")
        result["peak_rss_mib"] = gw.peak_rss_mib
        if gw.peak_rss_mib is not None:
            self.peaks.append(gw.peak_rss_mib)
        first = result["runs"][str(sizes[0])]["accepted_per_second"]
        last = result["runs"][str(sizes[-1])]["accepted_per_second"]
        result["ratio"] = round(last / first, 3) if first else None
        return result

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.args
        started = time.perf_counter()
        result: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "sqlite": sqlite3.sqlite_version,
                "load_before": _load(),
            },
            "config": {
                "ceiling_seconds": a.ceiling_seconds,
                "closed_seconds": a.closed_seconds,
                "open_seconds": a.open_seconds,
                "floor_seconds": a.floor_seconds,
                "warmup_seconds": a.warmup_seconds,
                "concurrency": a.concurrency,
                "rates": a.rates,
                "growth": sorted(a.growth),
                "growth_seconds": a.growth_seconds,
                "growth_repeats": a.growth_repeats,
                "pack_sizes": a.pack_sizes,
                "gateway_cpu": GATEWAY_CPU,
                "loadgen_cpu": LOADGEN_CPU,
            },
            "ingest": {},
            "growth": {},
        }
        databases = [d.strip() for d in a.databases.split(",") if d.strip()]
        growth_dbs = [d.strip() for d in a.growth_databases.split(",") if d.strip()]
        admin = pg_admin_url()
        pg_problem = pg_reachable(admin) if "postgresql" in databases + growth_dbs else None
        if pg_problem:
            self.say(f"PostgreSQL at {admin} is unreachable ({pg_problem}): skipping it")

        sqlite_inst = make_installation(self.work, "sqlite")
        self.say(f"ceiling: opening envelopes on one core for {a.ceiling_seconds:g} s")
        result["ceiling"] = ceiling.measure(sqlite_inst, a.ceiling_seconds, cpu=GATEWAY_CPU)
        self.ceiling_rate = float(result["ceiling"]["per_second"])
        self.say(f"ceiling: {self.ceiling_rate} per second")
        if a.floor_seconds > 0:
            self.say("HTTP floor: the server stack alone, an empty handler on the same core")
            result["floor"] = self.floor(sqlite_inst)
            self.say(
                f"HTTP floor: {result['floor']['per_second']} per second, "
                f"{result['floor']['per_cpu_second']} per second of its CPU; ingest / ceiling can "
                f"be at most {result['floor']['ratio_bound']} on this stack"
            )
        else:
            result["floor"] = report.skipped_floor("not asked for (--floor-seconds 0)")
        result["required"] = self.required(sqlite_inst, result["floor"])

        for db in report.DATABASES:
            if db not in databases:
                result["ingest"][db] = report.skipped_ingest("not asked for (--databases)", a.rates)
            elif db == "sqlite":
                result["ingest"][db] = self.ingest(sqlite_inst)
            elif pg_problem:
                result["ingest"][db] = report.skipped_ingest(
                    f"PostgreSQL unreachable: {pg_problem}", a.rates
                )
            else:
                with pg_database(admin) as url:
                    inst = make_installation(self.work, "postgresql", url)
                    result["ingest"][db] = self.ingest(inst)

        sizes = sorted(a.growth)
        for db in report.DATABASES:
            if db not in growth_dbs or len(sizes) < 1:
                result["growth"][db] = report.skipped_growth(
                    "not asked for (--growth-databases)", sizes
                )
            elif db == "sqlite":
                result["growth"][db] = self.growth(
                    db, lambda: make_installation(self.work, "sqlite")
                )
            elif pg_problem:
                result["growth"][db] = report.skipped_growth(
                    f"PostgreSQL unreachable: {pg_problem}", sizes
                )
            else:
                with pg_database(admin) as url:
                    result["growth"][db] = self.growth(
                        db, lambda url=url: make_installation(self.work, "postgresql", url)
                    )

        from gateway.bench import pack

        self.say("agenda pack")
        remaining = a.budget_seconds - (time.perf_counter() - started)
        result["pack"] = pack.measure(a.pack_sizes, self.work, a.pack_timeout, remaining)

        result["peak_rss_mib"] = max(self.peaks) if self.peaks else None
        result["machine"]["load_after"] = _load()
        result["seconds"] = round(time.perf_counter() - started, 1)
        if not a.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return result


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bench = Bench(args)
    result = bench.run()
    json_path, md_path = report.write(result, args.out)
    print()
    print(report.markdown(result))
    for db in report.DATABASES:
        ratio = result["ingest"][db].get("ingest_over_ceiling")
        if ratio is not None:
            print(
                f"ingest / ceiling ({db}): {ratio:.2f} "
                f"({result['ingest'][db]['closed']['accepted_per_second']} / "
                f"{result['ceiling']['per_second']})"
            )
    print(f"written: {json_path} and {md_path}")
    json.dumps(result)  # fail loudly here, not in a reader, if anything is not JSON
    return 0


if __name__ == "__main__":
    sys.exit(main())
