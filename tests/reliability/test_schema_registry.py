"""A schema registry outage under a running daemon: valid alerts wait for it, none is dead-lettered.

Rubin publishes in the Confluent wire format, whose schema comes from the registry. While the
registry answers 503 the daemon pauses the partition at the first alert it cannot decode and
keeps polling (it stays in its group); when the registry is back every alert is classified,
in order, exactly once.
"""

from __future__ import annotations

import struct
import time

import pytest

from broker_filter.outputs import decode
from broker_filter_proving.local_kafka import free_port
from broker_filter_proving.reliability.craft import schemaless
from broker_filter_proving.reliability.harness import DaemonProcess, OutputWatcher, produce, scrape, write_config
from broker_filter_proving.reliability.scenarios import create_topics
from broker_filter_proving.schema_registry import LocalSchemaRegistry

pytestmark = pytest.mark.kafka

SCHEMA_ID = 11
OUTAGE_S = 8.0
#: How long the daemon may take to start and pause the partition at the first alert.
STARTUP_S = 120.0


def test_a_registry_outage_pauses_the_partition_and_loses_no_alert(kafka_bootstrap, deployment, lsst_seeds, tmp_path):
    wire = [b"\x00" + struct.pack(">I", SCHEMA_ID) + schemaless(record, lsst_seeds.schema) for record in lsst_seeds.records]
    target = deployment(kafka_bootstrap)
    create_topics(target, 1)
    port = free_port()
    with LocalSchemaRegistry({SCHEMA_ID: lsst_seeds.schema}) as registry:
        registry.down()
        config = write_config(tmp_path / "daemon.toml", target, state={"path": str(tmp_path / "state.sqlite")}, metrics={"port": port},
                              decode={"schema_registry_url": registry.url}, scoring={"min_points": 5},
                              inference={"max_batch": 64, "max_wait_ms": 100.0, "device": "cpu"})
        produce(kafka_bootstrap, target.input_topic, wire, [None] * len(wire))
        with OutputWatcher(target) as watcher:
            daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
            try:
                # The outage is timed from the pause: a daemon that starts slowly on a busy
                # machine (torch import, group join) has not yet read the first alert at a
                # fixed time after its start.
                _wait_until(lambda: scrape("127.0.0.1", port).get("broker_filter_partitions_paused") == 1,
                            timeout=STARTUP_S, alive=daemon.alive, what="the partition to pause")
                at_pause = registry.requests
                deadline = time.monotonic() + OUTAGE_S
                while time.monotonic() < deadline:
                    assert daemon.alive(), daemon.log_tail()
                    time.sleep(0.5)
                during = scrape("127.0.0.1", port)
                assert watcher.accounted() == 0, "nothing may be written while the registry is down"
                registry.up()
                watcher.wait_for(len(wire), timeout=180, alive=daemon.alive)
                after = scrape("127.0.0.1", port)
            finally:
                status = daemon.terminate()
            messages = watcher.messages()
    assert status == 0, daemon.log_tail()
    assert during["broker_filter_partitions_paused"] == 1 and during["broker_filter_schema_registry_waits_total"] >= 1
    assert [t for t, _, _ in messages if t == target.dead_letter_topic] == []
    records = [decode("classification", value) for topic, value, _ in messages if topic == target.classification_topic]
    assert len(records) == len({r["record_id"] for r in records}) == len(wire)
    assert after["broker_filter_partitions_paused"] == 0
    assert registry.requests - at_pause < 2 * OUTAGE_S, "the back-off must spare the registry one request per message"


def _wait_until(condition, timeout: float, alive, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive(), f"the daemon died waiting for {what}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.25)
