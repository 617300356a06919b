"""`cmr-gateway backup`, `cmr-gateway restore` and `cmr-gateway backup-keygen`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gateway.backup.crypto import Protection, generate_recipient_key, read_passphrase
from gateway.cliutil import command, settings_from
from gateway.errors import UsageError


def register(sub: Any) -> None:
    p = command(
        sub,
        "backup",
        "write an encrypted backup: settings, keys, certificates and the database",
        cmd_backup,
    )
    p.add_argument("--out", type=Path, required=True)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--passphrase-file", type=Path)
    how.add_argument("--recipient", type=Path, help="an X25519 public key (backup-keygen)")

    p = command(
        sub,
        "restore",
        "restore a backup into an empty data directory (and an empty database)",
        cmd_restore,
    )
    p.add_argument("file", type=Path)
    p.add_argument("--database-url", help="PostgreSQL: the empty database to restore into")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--passphrase-file", type=Path)
    how.add_argument("--identity", type=Path, help="the private key of --recipient")

    p = command(
        sub,
        "backup-keygen",
        "make a key pair for backups: FILE (private, keep offline) and FILE.pub",
        cmd_keygen,
    )
    p.add_argument("--out", type=Path, required=True)


def cmd_backup(args: argparse.Namespace) -> int:
    from gateway.backup.archive import create_backup

    settings = settings_from(args)
    protection = Protection(
        passphrase=read_passphrase(args.passphrase_file) if args.passphrase_file else None,
        recipient=args.recipient,
    )
    manifest = create_backup(settings, args.out, protection)
    print(
        f"backup of {settings.data_dir} ({manifest.dialect}, {len(manifest.files)} files) "
        f"written to {args.out}"
    )
    for name in manifest.outside:
        print(f"not in the backup (outside the data directory): {name}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.backup.archive import restore_backup
    from gateway.cliutil import run
    from gateway.services import open_services

    target = getattr(args, "data_dir", None) or os.environ.get("CMR_GATEWAY_DATA_DIR")
    if not target:
        raise UsageError("give --data-dir: the empty directory to restore into")
    protection = Protection(
        passphrase=read_passphrase(args.passphrase_file) if args.passphrase_file else None,
        identity=args.identity,
    )
    restored = restore_backup(args.file, Path(target), protection, args.database_url)
    print(
        f"restored the backup of {restored.manifest.created_at} "
        f"({restored.manifest.dialect}) into {restored.settings.data_dir}"
    )
    for note in restored.notes:
        print(note)

    async def verify() -> Any:
        async with open_services(restored.settings) as s:
            return await s.audit.verify()

    result = run(verify())
    if not result.ok:
        print(f"audit chain broken at event {result.broken_seq}: {result.problem}")
        return 1
    print(f"audit chain intact: {result.events} events, head {result.head}")
    print("next: `cmr-gateway init` (applies any newer migrations), then `serve`")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    public = generate_recipient_key(args.out)
    print(f"private key {args.out} (keep it offline), public key {public} (for --recipient)")
    return 0
