"""`cmr-gateway retention purge [--dry-run]`."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cliutil import command, group, run, settings_from
from gateway.retention.service import Due
from gateway.services import open_services


def register(sub: Any) -> None:
    ret = group(sub, "retention", "purging personal data after the retention periods")
    p = command(
        ret,
        "purge",
        "purge the personal data of cases past their retention period (statistics stay)",
        cmd_purge,
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the cases and why, and change nothing"
    )


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def cmd_purge(args: argparse.Namespace) -> int:
    from gateway.retention.jobs import retention

    async def go() -> list[Due]:
        async with open_services(settings_from(args)) as s:
            service = retention(s)
            return await (service.due() if args.dry_run else service.purge(_actor()))

    items = run(go())
    for item in items:
        print(f"{item.case.reference}\t{item.describe()}")
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb} {len(items)} case{'s' if len(items) != 1 else ''}")
    return 0
