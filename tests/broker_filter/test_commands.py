"""``run`` and ``check`` as an operator meets them: one clear line on a bad start, exit 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from bf_support import REPO, assert_same_records, consume_all, produce, read_jsonl

from broker_filter.outputs import decode
from broker_filter.streams.kafka_config import redact


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broker_filter", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def test_bad_config_stops_with_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[inference]\nmax_batch = "many"\n')
    for command in ("run", "check"):
        done = _cli(command, "--config", str(config))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"broker-filter {command}: [inference] max_batch: expected an integer, got 'many'"
        ]


def test_unreachable_broker_stops_with_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')
    done = _cli("check", "--config", str(config), "--skip-model")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("broker-filter check: cannot reach Kafka at 127.0.0.1:1")


@pytest.mark.kafka
def test_check_reaches_the_broker_and_redacts_secrets(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(1)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ninput_topics = ["{topic}"]\n[kafka.client]\n"client.id" = "checker"\n'
    )
    done = _cli("check", "--config", str(config), "--skip-model")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["brokers"] == 1 and report["input_partitions"] == {topic: 1}
    assert redact({"sasl.password": "x"}) == {"sasl.password": "***"}


@pytest.mark.kafka
def test_run_survives_sigkill_and_sigterm_exits_zero(kafka_bootstrap, topics, labelled_stream, replayed, tmp_path):
    """kill -9 mid-stream, restart: every alert still has exactly one committed record; SIGTERM exits 0."""
    names = topics(input_partitions=1)
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{kafka_bootstrap}"\ngroup_id = "cli"\ninput_topics = ["{names["input"]}"]\n'
        f'classification_topic = "{names["classification"]}"\nnovelty_topic = "{names["novelty"]}"\n'
        f'dead_letter_topic = "{names["dead_letter"]}"\ntransactional_id = "cli-0"\n'
        f'[state]\npath = "{tmp_path / "state.sqlite"}"\n'
        '[inference]\ndevice = "cpu"\nmax_batch = 64\nmax_wait_ms = 20\n[metrics]\nport = 0\n'
    )
    produce(kafka_bootstrap, names["input"], labelled_stream.payloads)
    total = len(labelled_stream.payloads)
    env = dict(os.environ)

    command = [sys.executable, "-m", "broker_filter", "run", "--config", str(config)]
    daemon = subprocess.Popen(command, cwd=REPO, env=env, stderr=(tmp_path / "first.log").open("w"))
    try:
        first = consume_all(kafka_bootstrap, [names["classification"]], lambda m: len(m) >= total // 3, timeout=180)
        assert first, "the daemon produced nothing before the kill"
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
    log = tmp_path / "restarted.log"
    restarted = subprocess.Popen(command, cwd=REPO, env=env, stderr=log.open("w"))
    try:
        out = consume_all(kafka_bootstrap, [names["classification"]], lambda m: len(m) >= total, timeout=240, linger=3.0)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(120)
    assert restarted.returncode == 0, log.read_text()[-2000:]
    records = [decode("classification", m.value()) for m in out]
    # exactly one committed record per alert, none lost, and the same records as an uninterrupted replay
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))


@pytest.mark.parametrize("command", ["bench", "reliability", "kafka"])
def test_commands_of_the_proofs_say_in_one_line_that_a_runtime_install_lacks_them(command):
    """A runtime install (the image) has no broker_filter_proving: one line and exit 2, not an ImportError."""
    hide = "import sys; sys.modules['broker_filter_proving'] = None; from broker_filter.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide, command, "decode"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"broker-filter {command}: needs the broker-filter-proving package")
    listed = subprocess.run([sys.executable, "-c", hide, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert listed.returncode == 0 and "needs broker-filter-proving" in listed.stdout


FAILING_INVOCATIONS = {
    "inspect": ["inspect", "/nonexistent/alerts"],
    "produce": ["produce", "/nonexistent/alerts", "--topic", "t", "--bootstrap", "127.0.0.1:1"],
    "simulate": ["simulate", "--lightcurves", "/nonexistent/lc", "--out", "OUT/sim"],
    "train": ["train", "--data", "/nonexistent/lc", "--out", "OUT/bundle"],
    "evaluate": ["evaluate", "--data", "/nonexistent/lc", "--out", "OUT/report"],
    "split": ["split", "--data", "/nonexistent/lc", "--out", "OUT/split"],
    "calibrate": ["calibrate", "--model", "/nonexistent/bundle", "--data", "/nonexistent/lc", "--out", "OUT/b"],
    "evaluate-stream": ["evaluate-stream", "--data", "/nonexistent/lc", "--out", "OUT/stream"],
    "replay": ["replay", "/nonexistent/alerts", "--out", "OUT/replay"],
    "run": ["run", "--config", "/nonexistent/daemon.toml"],
    "check": ["check", "--config", "/nonexistent/daemon.toml"],
}


@pytest.mark.parametrize("command", sorted(FAILING_INVOCATIONS))
def test_with_json_logs_every_line_a_command_writes_to_stderr_is_json(command, tmp_path):
    """Log pipelines index JSON; a command that stops must say why in a line they can parse."""
    from broker_filter.cli import COMMANDS

    assert set(FAILING_INVOCATIONS) <= set(COMMANDS)
    argv = [str(tmp_path / a[4:]) if a.startswith("OUT/") else a for a in FAILING_INVOCATIONS[command]]
    done = _cli("--log-format", "json", "--log-level", "DEBUG", *argv)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines, done
    documents = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert documents[-1]["level"] == "ERROR" and documents[-1]["exit_status"] == done.returncode


@pytest.mark.parametrize("argv", [["bench", "decode", "--sample", "/nonexistent/sample.avro"],
                                  ["kafka", "--state-file", "/nonexistent/state.json", "status"]])
def test_the_proving_commands_write_only_json_to_stderr_too(argv):
    done = _cli("--log-format", "json", *argv)
    assert done.returncode != 0
    assert all(json.loads(line) for line in done.stderr.strip().splitlines() if line), done.stderr[-2000:]


def test_replay_honours_the_command_lines_log_settings_over_the_default(tmp_path):
    for level, shown in (("INFO", True), ("WARNING", False)):
        done = _cli("--log-format", "json", "--log-level", level, "replay", "data/alerts", "--out", str(tmp_path / level), "--no-progress")
        assert done.returncode == 0, done.stderr[-2000:]
        documents = [json.loads(line) for line in done.stderr.strip().splitlines()]
        assert any(d["message"].startswith("model bundle") for d in documents) == shown, (level, documents)


def test_evaluate_on_a_cpu_says_first_that_it_will_search_periods(capsys):
    import argparse as ap

    from broker_filter.commands.evaluate import _warn_if_slow

    _warn_if_slow(ap.Namespace(device="cpu", cv=5, data="data/lightcurves"), [None] * 2056, None)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "2,056 light curves on the CPU" in line and "15 min" in line and "--periods data/lightcurves/periods.csv" in line
    _warn_if_slow(ap.Namespace(device="cpu", cv=0, data="d"), [None] * 10, {("a", "g"): 1.0})
    assert capsys.readouterr().err == ""
