"""One validated settings object, read once at start-up from the data directory's
settings.toml and CMR_GATEWAY_* environment variables (the environment wins). A bad or unknown
key is one SettingsError that names it. Secrets are never values here: only paths to files."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from gateway.errors import SettingsError
from gateway.paths import DEFAULT_CONFIG_DIR, DEFAULT_SCHEMAS_DIR

ENV_PREFIX = "CMR_GATEWAY_"
DATA_DIR_ENV = "CMR_GATEWAY_DATA_DIR"
SETTINGS_FILE = "settings.toml"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = 8443
    web_host: str = "127.0.0.1"
    web_port: int = 8444
    # Where people reach the web listener; links in emails are built from it.
    public_base_url: str = ""
    # Empty means the embedded default, an SQLite file in the data directory.
    database_url: str = ""
    database_password_file: Path | None = None
    database_pool_size: int = 10
    max_body_bytes: int = 1024 * 1024
    clock_skew_seconds: int = 300
    # How long a rotated-out encryption key still decrypts.
    key_overlap_days: int = 30
    signing_algorithms: tuple[str, ...] = ("Ed25519", "ES256")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    agency_ca_file: Path | None = None
    web_tls_cert_file: Path | None = None
    web_tls_key_file: Path | None = None
    # A TLS-terminating proxy's verified client certificate is believed only from these addresses.
    trusted_proxies: tuple[str, ...] = ()
    client_cert_header: str = "X-Client-Certificate"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Mail: the development transport writes .eml files into the data directory's outbox/.
    mail_transport: Literal["file", "smtp"] = "file"
    mail_from: str = "cmr-gateway@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 587
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password_file: Path | None = None
    smtp_ca_file: Path | None = None
    smtp_timeout_seconds: int = 30
    outbox_max_attempts: int = 8
    outbox_poll_seconds: int = 5
    secretariat_email: str = ""
    # Information requests.
    request_deadline_days: int = 10
    request_reminder_days: tuple[int, ...] = (3, 1)
    auto_request_agencies: tuple[str, ...] = ()
    respond_max_bytes: int = 10 * 1024 * 1024
    respond_attachment_types: tuple[str, ...] = (
        "application/pdf",
        "text/plain",
        "image/png",
        "image/jpeg",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )
    respond_rate_per_minute: int = 30
    # Whether this process may run the scheduled jobs (one leader among all that may).
    scheduler: Literal["on", "off"] = "on"
    # Channels besides the API (docs/channels.md). No drop folder unless a directory is given.
    drop_dir: Path | None = None
    drop_poll_seconds: int = 2
    email_channel: Literal["on", "off"] = "off"
    smtp_listen_host: str = "127.0.0.1"
    smtp_listen_port: int = 8025
    email_max_bytes: int = 2 * 1024 * 1024
    # The gateway's own receiving address; mail to any other recipient is refused.
    email_address: str = "notifications@cmr.sbni.example"
    # Requests per minute per agency on the API: a token bucket in each process (0 = none).
    api_rate_per_minute: int = 0
    # Retention: days after a case closed, or after it last moved while not progressed, when
    # its personal data is purged (the statistics stay); 0 keeps it for ever.
    retention_closed_days: int = 2555
    retention_not_progressed_days: int = 1095
    # Where pg_dump and pg_restore are, for backups of a PostgreSQL installation (empty: PATH).
    pg_bin_dir: Path | None = None
    # People's accounts on the web listener (docs/web.md).
    web_session_idle_minutes: int = 30
    web_session_max_hours: int = 12
    web_setup_link_hours: int = 72
    web_login_max_failures: int = 5
    web_lockout_minutes: int = 15
    web_login_rate_per_minute: int = 20
    # Argon2id memory per password hash (RFC 9106's second recommendation: 64 MiB, t=3, p=4).
    web_password_memory_kib: int = 65536
    # Intake writes concurrent notifications in one transaction per batch, each answered
    # after that batch's commit (docs/performance.md); "off" gives each its own transaction.
    intake_group_commit: Literal["on", "off"] = "on"
    # The panel's meeting calendar and members (docs/meetings.md); empty: config/meetings.toml.
    meetings_file: Path | None = None
    config_dir: Path = DEFAULT_CONFIG_DIR
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # Derived locations, so that every part of the code asks one place.
    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def server_cert(self) -> Path:
        return self.tls_cert_file or self.tls_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.tls_key_file or self.tls_dir / "server.key"

    @property
    def web_cert(self) -> Path:
        return self.web_tls_cert_file or self.server_cert

    @property
    def web_key(self) -> Path:
        return self.web_tls_key_file or self.server_key

    @property
    def client_ca(self) -> Path:
        return self.agency_ca_file or self.tls_dir / "ca.crt"

    @property
    def dev_ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def web_base_url(self) -> str:
        return self.public_base_url or f"https://{_url_host(self.web_host)}:{self.web_port}"

    @property
    def api_base_url(self) -> str:
        return f"https://{_url_host(self.api_host)}:{self.api_port}"

    @property
    def effective_database_url(self) -> str:
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.data_dir / 'gateway.db'}"
        if self.database_password_file is None:
            return self.database_url
        from sqlalchemy.engine import make_url

        password = self.database_password_file.read_text().strip()
        return (
            make_url(self.database_url).set(password=password).render_as_string(hide_password=False)
        )

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("data_dir", "extra")}
_HINTS = typing.get_type_hints(Settings)


def _coerce(key: str, raw: Any, from_env: bool) -> Any:
    hint = _HINTS[key]
    origin = get_origin(hint)
    args = get_args(hint)
    optional = origin in (types.UnionType, typing.Union) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
        origin, args = get_origin(hint), get_args(hint)
        if raw in ("", None):
            return None
    try:
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError
            value: Any = int(raw)
            if value < 0:
                raise ValueError
            return value
        if hint is str:
            if not isinstance(raw, str):
                raise ValueError
            return raw
        if hint is Path:
            if not isinstance(raw, str) or not raw:
                raise ValueError
            return Path(raw).expanduser()
        if origin is tuple:
            items = [s.strip() for s in raw.split(",") if s.strip()] if from_env else raw
            if not isinstance(items, list):
                raise ValueError
            if args[0] is int:
                if not all(isinstance(i, int | str) and not isinstance(i, bool) for i in items):
                    raise ValueError
                ints = tuple(int(i) for i in items)
                if any(i < 0 for i in ints):
                    raise ValueError
                return ints
            if not all(isinstance(i, str) for i in items):
                raise ValueError
            return tuple(items)
        if origin is Literal:
            if raw not in args:
                raise SettingsError(f"setting {key!r} must be one of: {', '.join(args)}")
            return raw
    except (TypeError, ValueError):
        raise SettingsError(
            f"setting {key!r} has an invalid value for {_type_name(hint)}"
        ) from None
    raise SettingsError(f"setting {key!r} has an unsupported type")  # pragma: no cover


def _type_name(hint: Any) -> str:
    if hint is int:
        return "a whole number >= 0"
    if hint is Path:
        return "a file path"
    if get_origin(hint) is tuple:
        return "a list of whole numbers" if get_args(hint)[0] is int else "a list of strings"
    return "a string"


def load_settings(
    data_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read and validate. `overrides` are command-line flags, which win over everything."""
    env = os.environ if environ is None else environ
    base = Path(data_dir or env.get(DATA_DIR_ENV) or "./var").expanduser().resolve()
    values: dict[str, Any] = {}

    settings_file = base / SETTINGS_FILE
    if settings_file.exists():
        try:
            file_values = tomllib.loads(settings_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{settings_file} is not valid TOML: {exc}") from None
        extra = file_values.pop("agencies", None)
        for key, raw in file_values.items():
            if key not in _FIELDS:
                raise SettingsError(f"unknown setting {key!r} in {settings_file}")
            values[key] = _coerce(key, raw, from_env=False)
        if extra is not None:
            values["extra"] = {"agencies": extra}

    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == DATA_DIR_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            raise SettingsError(f"unknown setting {key!r} (environment variable {name})")
        values[key] = _coerce(key, raw, from_env=True)

    for key, raw in overrides.items():
        if raw is not None:
            values[key] = raw

    settings = Settings(data_dir=base, **values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    for key in ("api_port", "web_port"):
        port = getattr(s, key)
        if not 0 <= port <= 65535:
            raise SettingsError(f"setting {key!r} must be a port number (0-65535)")
    if s.max_body_bytes < 1024:
        raise SettingsError("setting 'max_body_bytes' must be at least 1024")
    if s.database_pool_size < 1:
        raise SettingsError("setting 'database_pool_size' must be at least 1")
    allowed = {"Ed25519", "ES256"}
    if not s.signing_algorithms or not set(s.signing_algorithms) <= allowed:
        raise SettingsError("setting 'signing_algorithms' may list only Ed25519 and ES256")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise SettingsError("setting 'trusted_proxies' holds an invalid address") from None
    url = s.database_url
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise SettingsError(
            "setting 'database_url' must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if s.database_password_file is not None and not s.database_password_file.is_file():
        raise SettingsError("setting 'database_password_file' names no readable file")
    for key in ("smtp_password_file", "smtp_ca_file"):
        path = getattr(s, key)
        if path is not None and not path.is_file():
            raise SettingsError(f"setting {key!r} names no readable file")
    for key in ("mail_from", "secretariat_email"):
        value = getattr(s, key)
        if value and "@" not in value:
            raise SettingsError(f"setting {key!r} must be an email address")
    if s.request_deadline_days < 1:
        raise SettingsError("setting 'request_deadline_days' must be at least 1")
    if s.outbox_max_attempts < 1:
        raise SettingsError("setting 'outbox_max_attempts' must be at least 1")
    if s.public_base_url and not s.public_base_url.startswith("https://"):
        raise SettingsError("setting 'public_base_url' must be an https:// URL")
