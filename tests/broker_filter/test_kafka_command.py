"""``broker-filter kafka start|status|stop``: a foreground broker that another shell stops."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from broker_filter.commands import kafka

# Only the kafka subcommand: the full CLI would import every other command too.
KAFKA_ONLY = (
    "import argparse, sys; from broker_filter.commands import kafka; "
    "p = argparse.ArgumentParser(); kafka.register(p.add_subparsers(dest='command', required=True)); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))"
)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="broker-filter")
    kafka.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.mark.kafka
def test_start_writes_its_address_status_reports_and_stop_shuts_it_down(tmp_path, capsys) -> None:
    state = tmp_path / "local-kafka.json"
    start = subprocess.Popen([sys.executable, "-c", KAFKA_ONLY, "kafka", "--state-file", str(state), "start", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not state.is_file() and start.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.is_file(), start.stdout.read() if start.poll() is not None else "no state file after 120 s"
        address = json.loads(state.read_text())["bootstrap"]
        assert AdminClient({"bootstrap.servers": address}).list_topics(timeout=10).brokers

        assert _run(["kafka", "--state-file", str(state), "status"]) == 0
        assert address in capsys.readouterr().out
        assert _run(["kafka", "--state-file", str(state), "stop"]) == 0
        assert start.wait(30) == 0
        assert not state.exists()
        assert _run(["kafka", "--state-file", str(state), "status"]) == 1
        assert f"bootstrap servers: {address}" in start.stdout.read()
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()


def test_status_and_stop_without_a_broker_say_so(tmp_path, capsys) -> None:
    state = tmp_path / "none.json"
    assert _run(["kafka", "--state-file", str(state), "status"]) == 1
    assert _run(["kafka", "--state-file", str(state), "stop"]) == 0
    assert capsys.readouterr().out.count("no local broker is running") == 2
