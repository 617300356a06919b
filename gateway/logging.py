"""structlog set-up: JSON lines (a console renderer on a terminal), request_id and agency bound
per request through contextvars, and a redaction processor as the last line of defence: the
code never logs personal data or key material, and this drops it if it ever tries."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Keys whose values are never written. fullmatch, so that e.g. "kid" is kept but "d" is not.
REDACT_KEYS = re.compile(
    r"(?i)(d|p|q|dp|dq|qi|k|oth|password|passphrase|secret|token|authorization|cookie|"
    r"private_key|body|payload|plaintext|document|narratives?|children|child|adults|"
    r"given_name|family_name|other_names|name|date_of_birth|dob|address|identifiers|"
    r"answer|answers|email|phone|notifier|place|description|case_outline|set-cookie)"
)
REDACTED = "[redacted]"


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if REDACT_KEYS.fullmatch(str(k)) else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in ("event", "level", "timestamp", "logger"):
            continue
        if REDACT_KEYS.fullmatch(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer())
    else:
        processors += [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # aiohttp's and asyncio's own loggers go through the standard library: keep their access
    # lines (which hold URLs with tokens later) off, and their errors on stderr without locals.
    logging.basicConfig(
        level=logging.WARNING, stream=out, format="%(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("aiohttp.access").disabled = True
