"""Logging for every ``broker-filter`` command: human text or one JSON object per line.

Operators run the daemon under systemd, Docker or Kubernetes, whose log pipelines (journald,
Loki, Elasticsearch) index JSON fields; people at a terminal want plain lines. Both come from
the standard :mod:`logging` module, configured once per process by :func:`configure_logging`,
so library code only ever calls ``logging.getLogger(__name__)``.

Where the settings come from, first match wins: the command line (``--log-level``,
``--log-format``, added by :func:`add_logging_arguments`), then the config file's
``[logging]`` section (``run`` and ``check``), then the environment
(``BROKER_FILTER_LOGGING_LEVEL``, ``BROKER_FILTER_LOGGING_FORMAT``, the same variables the
config loader honours), then INFO and text.

Progress bars (:func:`progress_bar`) go to stderr only when it is a terminal and logs are
text, so that JSON log streams stay one parseable object per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Literal

from broker_filter.config import LoggingConfig
from broker_filter.model.progress import machine_readable_logs, progress_bar
from broker_filter.streams.kafka_config import redact_urls

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVEL_ENV = "BROKER_FILTER_LOGGING_LEVEL"
FORMAT_ENV = "BROKER_FILTER_LOGGING_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is
# emitted as a JSON field of its own.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class LoggingSetupError(ValueError):
    """A level or format that is not one of :data:`LEVELS` / :data:`FORMATS`."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, then any
    ``extra=`` fields, then the exception's traceback text when there is one."""

    machine_readable = True  # progress bars stay off (broker_filter.model.progress)

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return redact_urls(json.dumps(document, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` lines. Both formatters mask the credentials of any URL in a line
    (an exception from a client library may quote the URL it was given, password included)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


def configure_logging(level: str = "INFO", log_format: str = "text", stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers with one writing ``log_format`` to ``stream``
    (stderr by default: stdout is kept for command output such as JSON lines)."""
    level = level.upper()
    if level not in LEVELS:
        raise LoggingSetupError(f"log level must be one of {list(LEVELS)}, got {level!r}")
    if log_format not in FORMATS:
        raise LoggingSetupError(f"log format must be one of {list(FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, defaulting to None so that a config file or
    the environment can decide when they are not given."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", choices=LEVELS, type=str.upper, default=None,
                       help=f"minimum level logged (default: ${LEVEL_ENV} or INFO)")
    group.add_argument("--log-format", choices=FORMATS, default=None,
                       help=f"text for people, json for log pipelines (default: ${FORMAT_ENV} or text)")


def resolve_logging(
    args: argparse.Namespace | None = None,
    config_level: str | None = None,
    config_format: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, LogFormat]:
    """The (level, format) pair by precedence: command line, config file, environment, defaults."""
    environ = os.environ if environ is None else environ
    level = (getattr(args, "log_level", None) or config_level or environ.get(LEVEL_ENV) or "INFO").upper()
    log_format = getattr(args, "log_format", None) or config_format or environ.get(FORMAT_ENV) or "text"
    return level, log_format  # type: ignore[return-value]


def configure_from_args(
    args: argparse.Namespace | None = None,
    config_level: str | None = None,
    config_format: str | None = None,
) -> None:
    """What each command handler calls first (``run``/``check`` pass their config's
    ``[logging]`` values); a bad level or format stops with one clear line."""
    configure_logging(*resolve_logging(args, config_level, config_format))


def setup_logging(config: LoggingConfig, args: argparse.Namespace | None = None) -> None:
    """For commands with a config file (``run``, ``check``, ``replay``): its ``[logging]``
    section (already merged with the environment by the loader), unless the command line
    says otherwise."""
    configure_from_args(args, config.level, config.format)


def fatal(message: str, status: int = 2) -> int:
    """Say why a command stops, in one line on stderr, and return its exit status.

    A person reads the line as it is; in JSON mode it is one JSON object (level ERROR, field
    ``exit_status``) like every other line, so that a log pipeline indexes the reason a daemon
    did not start instead of dropping an unparseable line. URL credentials are masked.
    """
    report(message, logging.ERROR, exit_status=status)
    return status


def report(message: str, level: int = logging.INFO, **fields: object) -> None:
    """What a command tells its user on stderr (a summary, a file written, a table): the text
    as it is, or in JSON mode one JSON object with ``fields`` (a table becomes one message
    with its newlines)."""
    if json_logging_active():
        logging.getLogger("broker_filter").log(level, message, extra=fields)
    else:
        print(redact_urls(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning of a command, not a stop (see :func:`report`)."""
    report(message, logging.WARNING)


def json_logging_active() -> bool:
    """True when the root logger writes JSON (then progress bars stay off)."""
    return machine_readable_logs()


__all__ = [
    "FORMATS",
    "LEVELS",
    "JsonFormatter",
    "LoggingSetupError",
    "add_logging_arguments",
    "configure_from_args",
    "configure_logging",
    "fatal",
    "report",
    "warn",
    "json_logging_active",
    "progress_bar",
    "resolve_logging",
    "setup_logging",
]
