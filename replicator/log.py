"""Structured logging, and the one place where secrets are scrubbed.

Console output on a terminal, JSON lines otherwise (or when asked). Loggers are bound with a
``component`` and, where it applies, ``table`` and ``seq`` range, so a line never needs an f-string.
Every password we learn from a DSN is registered here, and a processor replaces it wherever it
appears in any field of any line: a redaction that depends on each call site remembering would fail.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "****"
SHORT_SECRET = 4
"""Registered secrets shorter than this are redacted only where they stand alone, never inside a word:
a password ``p`` replaced everywhere would turn every ``p`` of every line into ``****``."""
_secrets: dict[str, re.Pattern[str]] = {}

# Greedy up to the last '@' of the authority: an unescaped '@' in the password (``app:p@ss@host``)
# must not leave the password's tail in the text.
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^/?#\s]*)(@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def register_secret(secret: str | None) -> None:
    """Redact ``secret`` (a whole password) from every line from now on; empty means nothing to hide."""
    if not secret or secret in _secrets:
        return
    escaped = re.escape(secret)
    _secrets[secret] = re.compile(escaped if len(secret) >= SHORT_SECRET else rf"(?<!\w){escaped}(?!\w)")


def redact(text: str) -> str:
    """Remove passwords from any text: URI userinfo, ``password=`` pairs and registered secrets."""
    text = _URI_PASSWORD.sub(rf"\g<1>{REDACTED}\g<3>", text)
    text = _KV_PASSWORD.sub(rf"\g<1>{REDACTED}", text)
    for pattern in _secrets.values():
        text = pattern.sub(REDACTED, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return redact(str(value))
    return value


def _scrub_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {key: _scrub(value) for key, value in event_dict.items()}


def _redacting_renderer(renderer: Any) -> Any:
    def render(logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        return redact(renderer(logger, name, event_dict))

    return render


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once per process; ``fmt`` is auto, console or json."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_processor,
            _redacting_renderer(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(component: str, **context: Any) -> Any:
    """A logger bound with its component and any fixed context (table, run id)."""
    return structlog.get_logger().bind(component=component, **context)
