"""The command line as an operator meets it: every subcommand documented by --help, and
``check`` / ``run`` failing fast with one clear line, never leaking a secret."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from deploy_helpers import free_port

from broker_filter.cli import COMMANDS, build_parser


def broker_filter(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker_filter", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "broker-filter.toml"
    path.write_text(body)
    return path


def _help(capsys: pytest.CaptureFixture, *args: str) -> str:
    """``--help`` output, in process (argparse prints and exits 0)."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    text = _help(capsys)
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", text, re.M), f"{name} is not described in broker-filter --help"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_documents_itself(command: str, capsys: pytest.CaptureFixture) -> None:
    text = _help(capsys, command)
    assert text.startswith("usage: broker-filter " + command)
    assert len(text.splitlines()) >= 3, f"{command} --help says almost nothing"


def test_the_console_script_answers_help() -> None:
    result = broker_filter("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: broker-filter")


def _assert_one_line_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr}"
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["check", "run"])
def test_missing_config_file_is_one_line(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    _assert_one_line_failure(broker_filter(command, "--config", str(missing)), str(missing))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    config = _write_config(tmp_path, '[kafka]\nbootstrap_server = "127.0.0.1:9092"\n')
    _assert_one_line_failure(broker_filter("check", "--config", str(config)), "[kafka]", "bootstrap_server")


def test_wrong_type_from_the_environment_is_named(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "")
    env = {**os.environ, "BROKER_FILTER_INFERENCE_MAX_BATCH": "many"}
    _assert_one_line_failure(broker_filter("check", "--config", str(config), env=env), "BROKER_FILTER_INFERENCE_MAX_BATCH")


@pytest.mark.parametrize("command", ["check", "run"])
def test_unreachable_brokers_stop_start_up_with_one_line(command: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = _write_config(tmp_path, f'[kafka]\nbootstrap_servers = "{address}"\n[metrics]\nport = 0\n')
    args = ("--skip-model",) if command == "check" else ()
    _assert_one_line_failure(broker_filter(command, "--config", str(config), *args), address)


@pytest.mark.kafka
def test_check_reaches_a_real_broker_and_redacts_the_password(kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path) -> None:
    topic = kafka_topic_factory(partitions=3)
    secret = f"hunter2-{uuid.uuid4().hex}"
    config = _write_config(tmp_path, f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
input_topics = ["{topic}"]
[kafka.client]
"sasl.username" = "broker"
"sasl.password" = "{secret}"
""")
    result = broker_filter("check", "--config", str(config), "--skip-model")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input_partitions"] == {topic: 3}
    assert report["brokers"] >= 1
    assert secret not in result.stdout + result.stderr
    assert report["client"]["sasl.username"] == "broker"


@pytest.mark.kafka
def test_check_names_a_missing_input_topic(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"absent-{uuid.uuid4().hex[:8]}"
    config = _write_config(tmp_path, f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ninput_topics = ["{topic}"]\n')
    _assert_one_line_failure(broker_filter("check", "--config", str(config), "--skip-model"), topic)
