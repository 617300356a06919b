"""Commands: `history import FILE.csv` and `report annual --year 2023-24` (docs/reports.md)."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.cliutil import command, group, run, settings_from
from gateway.errors import Unavailable, UsageError
from gateway.reports.figures import BusinessYear, CaseRecord, annual_figures
from gateway.reports.history import HistoryInvalid, ParsedHistory, parse_history
from gateway.reports.render import FORMATS, report_files
from gateway.reports.repository import LONDON, ImportResult, ReportsRepository
from gateway.reports.suppression import suppress
from gateway.settings import Settings

ACTOR = "cli:history-import"


def register(sub: Any) -> None:
    history = group(sub, "history", "notifications from before the gateway")
    p = command(
        history,
        "import",
        "import notifications from a CSV file, one row per child (importing again changes nothing)",
        cmd_history_import,
    )
    p.add_argument("file", type=Path)

    report = group(sub, "report", "reports")
    p = command(
        report,
        "annual",
        "the annual learning report of a business year (1 April to 31 March)",
        cmd_report_annual,
    )
    p.add_argument("--year", required=True, help="the business year, like 2023-24")
    p.add_argument("--format", choices=FORMATS, default="json")
    p.add_argument(
        "--out",
        default=".",
        help="the directory to write to (default the current one; - prints the JSON)",
    )
    p.add_argument(
        "--suppress-below",
        type=int,
        metavar="N",
        help="for publication: show every count from 1 to N-1 as <N",
    )


class ProgressBar:
    """A bar on a terminal, nothing otherwise (a log or a pipe gets only the result)."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.active = stream.isatty()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.active or total <= 0:
            return
        filled = self.WIDTH * done // total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# -- history import -------------------------------------------------------------------------------


def cmd_history_import(args: argparse.Namespace) -> int:
    from gateway.agencies.registry import AgencyRegistry
    from gateway.clock import SystemClock

    settings = settings_from(args)
    path: Path = args.file
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    agencies = AgencyRegistry.load(settings.config_dir, settings.extra.get("agencies"))
    clock = SystemClock()
    today = clock.now().astimezone(LONDON).date()
    parsed = parse_history(text, set(agencies.codes()), today)
    bar = ProgressBar("importing", sys.stdout)
    try:
        if parsed.problems:
            raise HistoryInvalid(parsed.problems)
        result = run(_import(settings, parsed, hashlib.sha256(raw).hexdigest(), bar))
    except HistoryInvalid as exc:
        bar.close()
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"error: {path}: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(
        f"imported {_plural(result.imported, 'notification')} "
        f"({_plural(result.children, 'child', 'children')}) from {path}; "
        f"{result.unchanged} already imported"
    )
    return 0


def _plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


async def _ready_repository(s: Any) -> ReportsRepository:
    if not await s.db.ping():
        raise Unavailable()
    if not await s.db.migrations_current():
        raise UsageError("the database is not migrated to this version: run `cmr-gateway init`")
    return ReportsRepository(s.db)


async def _import(
    settings: Settings, parsed: ParsedHistory, source_sha256: str, bar: ProgressBar
) -> ImportResult:
    from gateway.services import open_services

    async with open_services(settings) as s:
        repository = await _ready_repository(s)
        return await repository.import_history(parsed, source_sha256, ACTOR, s.clock.now(), bar)


# -- annual report --------------------------------------------------------------------------------


async def _records(settings: Settings) -> list[CaseRecord]:
    from gateway.services import open_services

    async with open_services(settings) as s:
        repository = await _ready_repository(s)
        return await repository.records()


def cmd_report_annual(args: argparse.Namespace) -> int:
    try:
        year = BusinessYear.parse(args.year)
    except ValueError:
        raise UsageError(f"--year {args.year!r}: give a business year like 2023-24") from None
    below: int | None = args.suppress_below
    if below is not None and below < 2:
        raise UsageError("--suppress-below must be 2 or more")
    if args.out == "-" and args.format != "json":
        raise UsageError("--out - prints JSON only: give a directory for the other formats")
    settings = settings_from(args)
    figures = annual_figures(run(_records(settings)), year)
    if below is not None:
        figures = suppress(figures, below)
    files = report_files(figures, args.format)
    if args.out == "-":
        sys.stdout.write(next(iter(files.values())).decode())
        return 0
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_bytes(content)
    except OSError as exc:
        raise UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None
    for name in files:
        print(out / name)
    return 0
