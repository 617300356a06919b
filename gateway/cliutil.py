"""What every command-line feature shares: the parser that fails in one line, --data-dir,
settings from the arguments, and running a coroutine. Features register their own commands
(`register(subparsers)` in gateway/<feature>/cli.py) and import these."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.settings import Settings, load_settings

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for every other error
        self.print_usage(sys.stderr)
        raise SystemExit(f"error: {message}")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="the installation's data directory (default ./var or $CMR_GATEWAY_DATA_DIR)",
    )


def command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help: str,
    func: Any,
) -> argparse.ArgumentParser:
    """A subcommand with --data-dir that runs `func(args) -> int`."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    add_data_dir(p)
    p.set_defaults(func=func)
    return p


def group(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help: str,
) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    p = sub.add_parser(name, help=help, description=help)
    subs: argparse._SubParsersAction = p.add_subparsers(  # type: ignore[type-arg]
        dest=f"{name}_command", required=True, parser_class=Parser
    )
    return subs


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "data_dir", None), **overrides)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
