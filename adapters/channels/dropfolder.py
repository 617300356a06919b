"""The drop-folder channel: a watched folder per agency, one `.jwe` file a message.

    {drop_dir}/{AGENCY}/incoming/<name>.jwe          dropped by the agency (written as .part,
                                                     then renamed: only complete files are taken)
    {drop_dir}/{AGENCY}/processed/<name>.jwe + <name>.receipt.json   {"reference", "receipt"}
    {drop_dir}/{AGENCY}/failed/<name>.jwe    + <name>.problem.json   the problem+json body

The folder is the authentication (like the SFTP account that writes into it): a file in PSNI's
folder is submitted as PSNI's, and the pipeline still checks that the envelope is signed by a
key registered for PSNI.

Exactly once across a crash: the order is submit, then write the result file atomically, then
move the `.jwe` out of incoming. The pipeline answers the same bytes from the same agency with
the original receipt and stores nothing new, so a file still in incoming after a crash (at any
step) is simply submitted again and ends with the same result. Nothing is lost, because a file
leaves incoming only after its result is durable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from adapters.channels.base import Submit, new_request_id
from gateway.errors import GatewayError, PayloadTooLarge, Unavailable

log = structlog.get_logger("gateway.channels.dropfolder")

SUFFIX = ".jwe"
RECEIPT_SUFFIX = ".receipt.json"
PROBLEM_SUFFIX = ".problem.json"


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    body: dict[str, Any]


class _NotARegularFile(Exception):
    pass


class DropFolder:
    name = "dropfolder"

    def __init__(
        self, root: Path, agencies: Iterable[str], poll_seconds: float, max_bytes: int
    ) -> None:
        self.root = root
        self.agencies = sorted(agencies)
        self.poll_seconds = poll_seconds
        self.max_bytes = max_bytes

    def describe(self) -> str:
        return (
            f"drop folder:             {self.root}/<AGENCY>/incoming/*.jwe "
            f"(every {self.poll_seconds:g} s)"
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def run(self, submit: Submit) -> None:
        while True:
            try:
                await self.scan(submit)
            except Exception:
                log.exception("dropfolder_pass_failed")
            await asyncio.sleep(self.poll_seconds)

    async def scan(self, submit: Submit) -> int:
        """One pass over every agency's incoming folder; the number of files finished."""
        finished = 0
        for agency in self.agencies:
            for name in await asyncio.to_thread(self._pending, agency):
                try:
                    done = await self._handle(agency, name, submit)
                except Unavailable:
                    # Storage is down: nothing was decided, so the file stays for the next pass.
                    log.warning("dropfolder_unavailable", agency=agency, file=name)
                    return finished
                except Exception:
                    # A bug must not block the other files; this one stays and is tried again.
                    log.exception("dropfolder_file_failed", agency=agency, file=name)
                    continue
                finished += done
        return finished

    async def _handle(self, agency: str, name: str, submit: Submit) -> int:
        request_id = new_request_id()
        path = self._dir(agency, "incoming") / name
        try:
            raw = await asyncio.to_thread(_read, path, self.max_bytes)
        except (FileNotFoundError, _NotARegularFile):
            # Taken by another process meanwhile, or swapped for something that is no file.
            return 0
        except PayloadTooLarge as exc:
            outcome = Outcome(False, {**exc.problem(), "request_id": request_id})
        else:
            try:
                result = await submit(agency, raw.strip(), request_id, self.name)
            except Unavailable:
                raise
            except GatewayError as exc:
                outcome = Outcome(False, {**exc.problem(), "request_id": request_id})
            else:
                outcome = Outcome(True, result.body())
        await asyncio.to_thread(self._finish, agency, name, outcome)
        log.info(
            "dropfolder_file_done",
            agency=agency,
            file=name,
            request_id=request_id,
            accepted=outcome.accepted,
            reference=outcome.body.get("reference"),
            code=outcome.body.get("code"),
        )
        return 1

    # -- the file system (called in a worker thread) ---------------------------------------------

    def _dir(self, agency: str, kind: str) -> Path:
        return self.root / agency / kind

    def _prepare(self) -> None:
        for agency in self.agencies:
            # incoming is where the agency's SFTP account writes: its group needs write access.
            for kind, mode in (("incoming", 0o770), ("processed", 0o750), ("failed", 0o750)):
                folder = self._dir(agency, kind)
                folder.mkdir(parents=True, exist_ok=True, mode=mode)
                if kind != "incoming":
                    # Half-written result files of a process that was killed while writing.
                    for stale in folder.glob(".*.tmp"):
                        stale.unlink(missing_ok=True)

    def _pending(self, agency: str) -> list[str]:
        folder = self._dir(agency, "incoming")
        names = []
        with os.scandir(folder) as entries:
            for entry in entries:
                # `.part` files are still being written; dotfiles are clients' temporary files.
                if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
                    continue
                if entry.is_file(follow_symlinks=False):
                    names.append(entry.name)
        return sorted(names)

    def _finish(self, agency: str, name: str, outcome: Outcome) -> None:
        incoming = self._dir(agency, "incoming")
        dest = self._dir(agency, "processed" if outcome.accepted else "failed")
        stem = _free_stem(dest, name[: -len(SUFFIX)])
        result = dest / f"{stem}{RECEIPT_SUFFIX if outcome.accepted else PROBLEM_SUFFIX}"
        _write_atomic(result, (json.dumps(outcome.body, indent=2) + "\n").encode())
        try:
            os.rename(incoming / name, dest / f"{stem}{SUFFIX}")
        except FileNotFoundError:
            # Another gateway process finished the same file first, with the same result.
            return
        _fsync_dir(incoming)
        _fsync_dir(dest)


def _read(path: Path, max_bytes: int) -> bytes:
    # O_NOFOLLOW: whoever writes into incoming must not make the gateway read other files.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotARegularFile(str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise PayloadTooLarge()
    return data


def _free_stem(dest: Path, stem: str) -> str:
    """The name to file under: the file's own, unless an earlier message of the same name is
    already there. Decided only by which `.jwe` files exist, so a retry after a crash between
    writing the result and moving the file chooses the same name and overwrites its own result."""
    candidate, n = stem, 0
    while (dest / f"{candidate}{SUFFIX}").exists():
        n += 1
        candidate = f"{stem}~{n}"
    return candidate


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # The renames themselves must survive a power loss, not only the files' contents.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
