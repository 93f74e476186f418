"""Logs as operators consume them: JSON lines a log pipeline can index, plain text for a
terminal, settings by precedence, and progress bars that never pollute either."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from broker_filter.config import LoggingConfig
from broker_filter.logging_setup import (
    LoggingSetupError,
    add_logging_arguments,
    configure_logging,
    json_logging_active,
    progress_bar,
    resolve_logging,
    setup_logging,
)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_extra_fields_and_the_traceback() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("broker_filter.daemon")
    log.info("committed %d outputs", 3, extra={"partition": 2, "object_id": "ZTF18abcdefg"})
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        log.exception("transaction aborted")
    log.debug("not shown at INFO")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "committed 3 outputs"
    assert first["level"] == "INFO" and first["logger"] == "broker_filter.daemon"
    assert first["partition"] == 2 and first["object_id"] == "ZTF18abcdefg"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "RuntimeError: broker gone" in second["exception"]
    assert json_logging_active()


def test_text_lines_for_people() -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", stream)
    logging.getLogger("broker_filter.state").warning("evicted %d objects", 10)
    logging.getLogger("broker_filter.state").info("hidden")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("WARNING broker_filter.state: evicted 10 objects")
    assert not json_logging_active()


@pytest.mark.parametrize(("level", "log_format"), [("LOUD", "text"), ("INFO", "xml")])
def test_unknown_level_or_format_is_refused(level: str, log_format: str) -> None:
    with pytest.raises(LoggingSetupError, match="must be one of"):
        configure_logging(level, log_format, io.StringIO())


def test_command_line_beats_config_beats_environment() -> None:
    parser = argparse.ArgumentParser()
    add_logging_arguments(parser)
    environ = {"BROKER_FILTER_LOGGING_LEVEL": "debug", "BROKER_FILTER_LOGGING_FORMAT": "json"}
    assert resolve_logging(parser.parse_args([]), environ={}) == ("INFO", "text")
    assert resolve_logging(parser.parse_args([]), environ=environ) == ("DEBUG", "json")
    assert resolve_logging(parser.parse_args([]), "ERROR", "text", environ) == ("ERROR", "text")
    flags = parser.parse_args(["--log-level", "warning", "--log-format", "json"])
    assert resolve_logging(flags, "ERROR", "text", environ) == ("WARNING", "json")


def test_setup_from_the_config_section() -> None:
    setup_logging(LoggingConfig(level="ERROR", format="json"))
    root = logging.getLogger()
    assert root.level == logging.ERROR and json_logging_active()


def test_progress_bar_hidden_off_a_terminal_and_with_json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging("INFO", "text", io.StringIO())
    with progress_bar(total=3, desc="replay", unit="alert") as bar:
        bar.update(3)
    assert "replay" in terminal.getvalue() and "3/3" in terminal.getvalue()

    configure_logging("INFO", "json", io.StringIO())
    terminal.truncate(0)
    terminal.seek(0)
    assert list(progress_bar(range(3), desc="replay")) == [0, 1, 2]
    assert terminal.getvalue() == ""

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    configure_logging("INFO", "text", io.StringIO())
    assert list(progress_bar(range(3), desc="train")) == [0, 1, 2]
    assert piped.getvalue() == ""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_url_credentials_never_reach_a_log_line(log_format: str) -> None:
    """A client library's exception may quote the URL it was given, password included."""
    stream = io.StringIO()
    configure_logging("INFO", log_format, stream)
    log = logging.getLogger("test-redaction")
    log.warning("registry http://reader:s3cret@registry:8081 unreachable")
    try:
        raise ConnectionError("cannot reach https://reader:s3cret@registry:8081/schemas/ids/1")
    except ConnectionError:
        log.exception("lookup failed")
    text = stream.getvalue()
    assert "s3cret" not in text and text.count("://***@registry:8081") == 3


def test_a_hidden_bar_logs_progress_with_an_eta_instead_of_staying_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal (systemd, CI, JSON logs) a long command still says how far it is."""
    import broker_filter.model.progress as progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    bar = progress_bar(total=10, desc="evaluate folds", unit="fold")
    for _ in range(4):
        clock[0] += 20.0
        bar.update(1)
    bar.close()
    lines = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert lines[0] == "evaluate folds: 2/10 fold in 40 s (0.1 fold/s, about 160 s left)"
    assert lines[-1].startswith("evaluate folds: 4/10 fold in 80 s") and lines[-1].endswith("done")
