"""Mail transports: SMTP (aiosmtplib, STARTTLS and authentication) and the development
transport that writes each message as an .eml file into the data directory."""

from __future__ import annotations

import os
import ssl
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiosmtplib


class DeliveryFailed(Exception):
    """The message was not delivered. `permanent` when trying again cannot help."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class MailTransport(Protocol):
    async def send(self, sender: str, recipient: str, message: bytes, label: str) -> None: ...


class FileTransport:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, sender: str, recipient: str, message: bytes, label: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f")
        final = self.directory / f"{stamp}-{label}.eml"
        tmp = final.with_suffix(".part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(message)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


class SmtpTransport:
    def __init__(
        self,
        host: str,
        port: int,
        security: str,
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
        timeout: float = 30,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    async def send(self, sender: str, recipient: str, message: bytes, label: str) -> None:
        try:
            await aiosmtplib.send(
                message,
                sender=sender,
                recipients=[recipient],
                hostname=self.host,
                port=self.port,
                username=self.username or None,
                password=self.password or None,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=self.tls if self.security != "none" else None,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed("the recipient was refused", permanent=True) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryFailed("SMTP authentication failed") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from exc
