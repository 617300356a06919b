"""The command line (PROTOCOL.md, Command line). Every command takes --data-dir; errors print
one line and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.accounts import cli as accounts_cli
from gateway.backup import cli as backup_cli
from gateway.cliutil import Parser, add_data_dir, command, group, run, settings_from
from gateway.clock import Clock
from gateway.errors import GatewayError, Unavailable, UsageError
from gateway.meetings import cli as meetings_cli
from gateway.reports import cli as reports_cli
from gateway.requests import cli as requests_cli
from gateway.retention import cli as retention_cli
from gateway.settings import Settings, load_settings

# Features that bring their own commands: each module has `register(subparsers)`.
FEATURES: list[Callable[[Any], None]] = [requests_cli.register, reports_cli.register]
FEATURES += [retention_cli.register, backup_cli.register]
FEATURES += [accounts_cli.register]
FEATURES += [meetings_cli.register]

SETTINGS_TEMPLATE = """\
# Settings of this gateway installation. Every key can also be given as an environment
# variable CMR_GATEWAY_<KEY> (upper case), which wins over this file. Secrets are never
# written here: give the path of a file that holds them (e.g. database_password_file).
# See docs/operations.md for every key.

# api_host = "127.0.0.1"
# api_port = 8443
# web_host = "127.0.0.1"
# web_port = 8444
# public_base_url = "https://cmr.example.org"
# database_url = "postgresql+asyncpg://cmr@db.example.org/cmr"
# database_password_file = "/etc/cmr-gateway/db-password"
# max_body_bytes = 1048576
# clock_skew_seconds = 300
# key_overlap_days = 30

# Contacts for information requests, per agency:
# [agencies.PSNI]
# contact = "cmr-requests@psni.example"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cmr-gateway", description="The CMR notification gateway")
    add_data_dir(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    command(
        sub, "init", "create a working installation (running it again changes nothing)", cmd_init
    )
    p = command(sub, "serve", "run the gateway and print the two URLs it listens on", cmd_serve)
    p.add_argument("--api-port", type=int)
    p.add_argument("--web-port", type=int)

    agency = group(sub, "agency", "agency keys and development credentials")
    p = command(
        agency,
        "credentials",
        "development: a signing key and client certificate",
        cmd_agency_credentials,
    )
    p.add_argument("code")
    p.add_argument("--out", type=Path, required=True)
    p = command(agency, "add-key", "register an agency's public signing key", cmd_agency_add_key)
    p.add_argument("code")
    p.add_argument("--jwk", type=Path, required=True)
    p = command(agency, "revoke-key", "revoke an agency's signing key", cmd_agency_revoke_key)
    p.add_argument("code")
    p.add_argument("kid")
    p = command(agency, "keys", "list the registered agency keys", cmd_agency_keys)
    p.add_argument("code", nargs="?")

    p = command(
        sub, "send", "the reference client: seal FILE, submit it, check the receipt", cmd_send
    )
    p.add_argument("--credentials", type=Path, required=True)
    p.add_argument("--url")
    p.add_argument("--format", default="cmr-notification/1")
    p.add_argument("--jti")
    p.add_argument("file", type=Path)

    keys = group(sub, "keys", "the gateway's own keys")
    command(
        keys,
        "rotate",
        "a new encryption key; the previous one decrypts for the overlap",
        cmd_keys_rotate,
    )
    audit = group(sub, "audit", "the audit log")
    command(audit, "verify", "verify the hash chain; name the first broken link", cmd_audit_verify)

    for register in FEATURES:
        register(sub)
    return parser


_settings = settings_from
_run_value = run


# -- init ---------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    data_dir = Path(
        getattr(args, "data_dir", None) or os.environ.get("CMR_GATEWAY_DATA_DIR") or "./var"
    )
    settings, done = init_installation(data_dir)
    print(f"installation in {settings.data_dir}: " + ("; ".join(done) if done else "nothing to do"))
    return 0


def init_installation(data_dir: Path) -> tuple[Settings, list[str]]:
    """Make whatever of a working installation is missing; what exists is left alone."""
    from gateway.clock import SystemClock
    from gateway.keys import pki
    from gateway.keys.keyring import Keyring
    from gateway.storage import database

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    done: list[str] = []
    settings_file = data_dir / "settings.toml"
    if not settings_file.exists():
        settings_file.write_text(SETTINGS_TEMPLATE)
        done.append(f"wrote {settings_file}")
    settings = load_settings(data_dir)
    clock = SystemClock()
    if not Keyring.exists(settings.keys_dir):
        Keyring.create(settings.keys_dir, clock)
        done.append("made the gateway keys (encryption, receipt signing, data at rest)")
    if settings.agency_ca_file is None and not settings.client_ca.exists():
        pki.create_ca(settings.client_ca, settings.dev_ca_key, clock.now())
        done.append(f"made a development CA in {settings.tls_dir}")
    if settings.tls_cert_file is None and not settings.server_cert.exists():
        pki.issue_server_cert(
            settings.client_ca,
            settings.dev_ca_key,
            settings.server_cert,
            settings.server_key,
            clock.now(),
        )
        done.append("made a server certificate for localhost")
    url = settings.effective_database_url
    if not database.is_current(url):
        try:
            database.upgrade(url)
        except Exception as exc:
            if database.is_unavailable(exc):
                raise Unavailable() from None
            raise
        done.append("migrated the database")
    return settings, done


# -- serve --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logging as gwlog

    settings = _settings(args, api_port=args.api_port, web_port=args.web_port)
    gwlog.configure(settings.log_level, settings.log_format)
    return run(serve(settings, lambda line: print(line, flush=True), started=_settle_heap))


def _settle_heap(_api_port: int, _web_port: int) -> None:
    """What start-up made lives as long as the process: freeze it out of the cyclic garbage
    collector's way, or every full collection walks it all (about 0.2 s here, the tail of the
    intake latency; docs/performance.md)."""
    import gc

    gc.collect()
    gc.freeze()


# asyncio gives every TLS connection a receive buffer of 256 KiB (Python 3.11+), zeroed and so
# resident at once: 64 MiB at 256 keep-alive connections, the most of the gateway's memory
# under load (docs/performance.md). 64 KiB still holds four full TLS records per read.
TLS_READ_BUFFER_BYTES = 64 * 1024


def _small_tls_buffers() -> None:
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES


async def serve(
    settings: Settings,
    announce: Callable[[str], None],
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    started: Callable[[int, int], None] | None = None,
) -> int:
    from aiohttp import web

    from gateway.http.app import CHANNELS, create_app
    from gateway.http.appkeys import LISTENERS

    _small_tls_buffers()
    app = create_app(settings, clock)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        listeners = app[LISTENERS]
        api = web.TCPSite(runner, settings.api_host, settings.api_port, ssl_context=listeners.api)
        web_site = web.TCPSite(
            runner, settings.web_host, settings.web_port, ssl_context=listeners.web
        )
        try:
            await api.start()
            await web_site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen: {exc.strerror or exc}") from None
        api_port = _bound_port(api)
        web_port = _bound_port(web_site)
        host_api, host_web = _host(settings.api_host), _host(settings.web_host)
        announce(f"agency API (mutual TLS): https://{host_api}:{api_port}")
        announce(f"web listener:            https://{host_web}:{web_port}")
        for channel in app.get(CHANNELS, []):
            announce(channel.describe())
        announce(
            "To send the shipped example, in another terminal:\n"
            f"  cmr-gateway --data-dir {settings.data_dir} agency credentials PSNI "
            f"--out {settings.data_dir}/credentials/PSNI\n"
            f"  cmr-gateway --data-dir {settings.data_dir} send --credentials "
            f"{settings.data_dir}/credentials/PSNI --url https://{host_api}:{api_port} "
            "schemas/examples/harm-route.notification.json"
        )
        if started is not None:
            started(api_port, web_port)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bound_port(site: Any) -> int:
    server = site._server  # aiohttp keeps the asyncio server here; the only way to read port 0
    return int(server.sockets[0].getsockname()[1])


# -- agency keys and credentials ---------------------------------------------------------------


def _check_agency(settings: Settings, code: str) -> None:
    from gateway.agencies.registry import AgencyRegistry

    registry = AgencyRegistry.load(settings.config_dir, settings.extra.get("agencies"))
    if code not in registry:
        raise UsageError(f"unknown agency {code!r}; known: {', '.join(registry.codes())}")


def cmd_agency_credentials(args: argparse.Namespace) -> int:
    settings = _settings(args)
    kid = _run_value(issue_credentials(settings, args.code, args.out))
    print(f"credentials for {args.code} in {args.out} (signing key {kid})")
    return 0


async def issue_credentials(settings: Settings, code: str, out: Path) -> str:
    """Development: a signing key (registered) and a client certificate for `code` in `out`."""
    from joserfc.jwk import OKPKey

    from gateway.clock import SystemClock
    from gateway.keys import pki
    from gateway.services import open_services

    _check_agency(settings, code)
    if not settings.dev_ca_key.exists():
        raise UsageError("no development CA in this installation (run `cmr-gateway init`)")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    now = SystemClock().now()
    key = OKPKey.generate_key("Ed25519", private=True)
    key.ensure_kid()
    kid = str(key.kid)
    private = {**key.as_dict(private=True), "alg": "Ed25519", "use": "sig"}
    public = {
        k: v for k, v in key.as_dict(private=False).items() if k in ("kty", "crv", "x", "kid")
    }
    async with open_services(settings) as s:
        await s.agency_keys.add(
            code, kid, "Ed25519", public, actor="cli:agency-credentials", at=now
        )
        jwks = s.keyring.jwks()
    pki.issue_client_cert(
        settings.client_ca, settings.dev_ca_key, code, out / "client.crt", out / "client.key", now
    )
    _write_secret(out / "signing-key.jwk", json.dumps(private, indent=2))
    (out / "ca.crt").write_bytes(settings.client_ca.read_bytes())
    (out / "gateway.jwks.json").write_text(json.dumps(jwks, indent=2))
    return kid


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def cmd_agency_add_key(args: argparse.Namespace) -> int:
    from gateway.agencies.keys import PRIVATE_MEMBERS, public_signing_jwk
    from gateway.clock import SystemClock

    settings = _settings(args)
    _check_agency(settings, args.code)
    try:
        raw = json.loads(args.jwk.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read a JWK from {args.jwk}: {exc}") from None
    if isinstance(raw, dict) and PRIVATE_MEMBERS & set(raw):
        raise UsageError("that JWK holds a private key: register the public key only")
    kid, alg, public = public_signing_jwk(raw, settings.signing_algorithms)

    async def add() -> None:
        from gateway.services import open_services

        async with open_services(settings) as s:
            await s.agency_keys.add(args.code, kid, alg, public, "cli:add-key", SystemClock().now())

    _run_value(add())
    print(f"registered {alg} key {kid} for {args.code}")
    return 0


def cmd_agency_revoke_key(args: argparse.Namespace) -> int:
    from gateway.clock import SystemClock

    settings = _settings(args)
    _check_agency(settings, args.code)

    async def revoke() -> None:
        from gateway.services import open_services

        async with open_services(settings) as s:
            await s.agency_keys.revoke(args.code, args.kid, "cli:revoke-key", SystemClock().now())

    _run_value(revoke())
    print(f"revoked key {args.kid} of {args.code}")
    return 0


def cmd_agency_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def listing() -> list[Any]:
        from gateway.services import open_services

        async with open_services(settings) as s:
            return await s.agency_keys.all_keys(args.code)

    for k in _run_value(listing()):
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        print(f"{k.agency}\t{k.kid}\t{k.alg}\tadded {k.added_at:%Y-%m-%d}\t{state}")
    return 0


# -- send ---------------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    from gateway.client import send_file

    settings = _settings(args)
    url = args.url or settings.api_base_url
    result = _run_value(send_file(args.credentials, url, args.format, args.file, jti=args.jti))
    print(f"{'accepted' if result.created else 'already received'}: {result.reference}")
    print(
        f"receipt verified: signed by gateway key {result.receipt_kid}, "
        f"envelope sha256 {result.envelope_sha256}, received at {result.received_at}"
    )
    return 0


# -- keys and audit -----------------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from gateway.audit.chain import AuditEvent
    from gateway.clock import SystemClock
    from gateway.keys.keyring import Keyring

    settings = _settings(args)
    clock = SystemClock()
    keyring = Keyring(settings.keys_dir, clock, timedelta(days=settings.key_overlap_days))
    previous = keyring.current_encryption_kid
    kid = keyring.rotate_encryption_key()

    async def record() -> None:
        from gateway.services import open_services

        async with open_services(settings) as s:
            await s.audit.record(
                AuditEvent(
                    "cli:keys-rotate",
                    "gateway_key.rotated",
                    None,
                    {"kid": kid, "previous": previous},
                ),
                clock.now(),
            )

    _run_value(record())
    print(
        f"new encryption key {kid}; {previous} still decrypts for {settings.key_overlap_days} days"
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def verify() -> Any:
        from gateway.services import open_services

        async with open_services(settings) as s:
            return await s.audit.verify()

    result = _run_value(verify())
    if result.ok:
        # Record the head outside the database: it is what proves the chain was not rewritten.
        print(f"audit chain intact: {result.events} events, head {result.head}")
        return 0
    print(f"audit chain broken at event {result.broken_seq}: {result.problem}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except Unavailable:
        print("error: the database is unavailable", file=sys.stderr)
        return 3
    except GatewayError as exc:
        print(f"error: {exc.detail or exc.title}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:  # the promise: no traceback reaches a terminal
        print(f"error: unexpected failure ({type(exc).__name__}); see the logs", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
