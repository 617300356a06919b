"""`cmr-gateway user ...`: accounts for the web pages. Adding or resetting an account prints
a one-time set-up link, to be given to the person by a trusted route."""

from __future__ import annotations

import argparse
from typing import Any
from zoneinfo import ZoneInfo

from gateway.accounts.service import ROLES
from gateway.cliutil import command, group, run, settings_from
from gateway.services import open_services

LONDON = ZoneInfo("Europe/London")


def register(sub: Any) -> None:
    user = group(sub, "user", "accounts of the secretariat, panel members and administrators")
    p = command(user, "add", "add an account and print its one-time set-up link", cmd_add)
    p.add_argument("email")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", default="")
    command(user, "list", "list the accounts", cmd_list)
    p = command(user, "disable", "disable an account; its sessions end at once", cmd_disable)
    p.add_argument("email")
    p = command(
        user,
        "reset",
        "new set-up link (forgotten password, lost authenticator); sessions end",
        cmd_reset,
    )
    p.add_argument("email")


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _until(at: Any) -> str:
    return f"{at.astimezone(LONDON):%d %B %Y %H:%M} (Europe/London)"


def cmd_add(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.accounts.add(args.email, args.role, args.name, _actor())

    account, link = run(go())
    print(
        f"added {account.email} ({account.role}); one-time set-up link, valid until "
        f"{_until(link.expires_at)}:"
    )
    print(link.url)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.accounts.all_accounts()

    rows = run(go())
    for a in rows:
        print(
            f"{a.email}\t{a.role}\t{a.status}\tadded {a.created_at.astimezone(LONDON):%Y-%m-%d}"
            + (f"\t{a.name}" if a.name else "")
        )
    if not rows:
        print("no accounts")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.accounts.disable(args.email, _actor())

    account = run(go())
    print(f"disabled {account.email}; its sessions have ended")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with open_services(settings_from(args)) as s:
            return await s.accounts.reset(args.email, _actor())

    link = run(go())
    print(
        f"reset {args.email.strip().lower()}; one-time set-up link, valid until "
        f"{_until(link.expires_at)}:"
    )
    print(link.url)
    return 0
