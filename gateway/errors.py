"""The one root error type. Every failure a client, a user or a terminal can see is a
GatewayError with a stable code; the HTTP middleware and the CLI turn it into problem+json or
one line of text. Nothing else is allowed to escape to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GatewayError(Exception):
    code: str = "internal_error"
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://sbni.example/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body

    def headers(self) -> dict[str, str]:
        return {}


class EnvelopeRejected(GatewayError):
    """Every failure to open or verify an envelope. The detail given to the constructor is the
    cause for the log only; the client always sees the same body, so the answer is no oracle."""

    code = "envelope_rejected"
    status = 401
    title = "The envelope could not be opened or verified"

    def __init__(self, cause: str) -> None:
        super().__init__(None)
        self.cause = cause


class UnsupportedMediaType(GatewayError):
    code = "unsupported_media_type"
    status = 415
    title = "Content-Type must be application/jose"


class PayloadTooLarge(GatewayError):
    code = "payload_too_large"
    status = 413
    title = "The request body is larger than allowed"


class AgencyMismatch(GatewayError):
    code = "agency_mismatch"
    status = 403
    title = "The envelope's issuer is not the agency of the client certificate"


class ReplayedMessage(GatewayError):
    code = "replayed_message"
    status = 409
    title = "This message id was already used with a different envelope"


@dataclass(frozen=True)
class FieldError:
    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


class SchemaInvalid(GatewayError):
    code = "schema_invalid"
    status = 422
    title = "The notification is not valid against its schema"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(None, errors=[e.as_dict() for e in errors])
        self.errors = errors


class FormatNotAllowed(GatewayError):
    code = "format_not_allowed"
    status = 422
    title = "This format is not allowed for the sending agency"


class NotFound(GatewayError):
    code = "not_found"
    status = 404
    title = "Not found"


class RateLimited(GatewayError):
    code = "rate_limited"
    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(None)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(GatewayError):
    code = "unavailable"
    status = 503
    title = "The service is temporarily unavailable"

    def __init__(self, retry_after: int = 5, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SettingsError(GatewayError):
    code = "settings_invalid"
    title = "Invalid settings"


class UsageError(GatewayError):
    """A command-line problem the operator can fix: a missing file, an unknown agency."""

    code = "usage_error"
    title = "Invalid command"
