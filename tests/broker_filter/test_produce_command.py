"""``broker-filter produce``: an archive into a topic, summary printed, failures exit 1."""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
from pathlib import Path

import pytest

from broker_filter.commands import produce
from broker_filter.streams.kafka import KafkaSource, delete_topics, ensure_topics

ALERTS = Path(__file__).resolve().parents[2] / "data" / "alerts"
needs_alerts = pytest.mark.skipif(not ALERTS.is_dir(), reason="data/alerts (the committed sample alerts) is not in this checkout")


def main(argv: list[str]) -> int:
    """The produce subcommand alone (the full CLI would import every other command too)."""
    parser = argparse.ArgumentParser(prog="broker-filter")
    produce.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.mark.kafka
@needs_alerts
def test_produce_loads_every_alert_keyed_by_object(kafka_bootstrap, kafka_topic_factory, capsys) -> None:
    topic = kafka_topic_factory(partitions=2)
    assert main(["produce", str(ALERTS), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["delivered"] == summary["produced"] >= 20 and summary["failed"] == 0
    with KafkaSource(kafka_bootstrap, "produce-test", [topic]) as source:
        received = []
        while len(received) < summary["produced"]:
            received += source.consume(500, 2.0)
    assert all(m.key for m in received)


@pytest.mark.kafka
@needs_alerts
def test_produce_keeps_to_the_requested_rate(kafka_bootstrap, kafka_topic_factory, tmp_path, capsys) -> None:
    topic = kafka_topic_factory()
    folder = tmp_path / "alerts"
    folder.mkdir()
    shutil.copy(next(ALERTS.rglob("*multi_alerts_other.avro")), folder)  # 3 alerts
    assert main(["produce", str(folder), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--rate", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["produced"] == 3 and summary["seconds"] >= 2 / 4


@pytest.mark.kafka
@needs_alerts
def test_produce_exits_non_zero_when_the_broker_rejects_messages(kafka_bootstrap, capsys) -> None:
    topic = f"small-messages-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 1}, config={"max.message.bytes": "1024"})  # every alert is larger
    one_alert = ALERTS / "ztf" / "2019_01_10_739260766315010006.avro"
    code = main(["produce", str(one_alert), "--topic", topic, "--bootstrap-servers", kafka_bootstrap])
    assert code == 1
    assert "delivery failures 1" in capsys.readouterr().out
    delete_topics(kafka_bootstrap, [topic])


def test_produce_refuses_a_missing_source_with_one_line(capsys) -> None:
    assert main(["produce", "/nonexistent/alerts", "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "no such alert source" in capsys.readouterr().err


@pytest.mark.kafka
@needs_alerts
def test_messages_the_client_refuses_are_counted_and_the_rest_is_sent(kafka_bootstrap, kafka_topic_factory, capsys) -> None:
    """A message over message.max.bytes used to end the run with a traceback and unflushed messages."""
    topic = kafka_topic_factory()
    code = main(["produce", str(ALERTS), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--json",
                 "--client", "message.max.bytes=100000"])  # 3 of the 24 are larger
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and summary["failed"] > 0 and summary["delivered"] == summary["produced"] > 0
    assert summary["next"] == summary["produced"] + summary["failed"] and summary["stopped"] == ""


@pytest.mark.kafka
@needs_alerts
def test_start_at_resumes_without_duplicates(kafka_bootstrap, kafka_topic_factory, capsys) -> None:
    topic = kafka_topic_factory()
    assert main(["produce", str(ALERTS), "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--json"]) == 0
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    resumed_topic = kafka_topic_factory()
    assert main(["produce", str(ALERTS), "--topic", resumed_topic, "--bootstrap-servers", kafka_bootstrap, "--json",
                 "--start-at", str(whole["next"] - 5)]) == 0
    rest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rest["produced"] == 5 and rest["next"] == whole["next"]
