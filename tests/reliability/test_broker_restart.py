"""The broker goes away under the daemon (SIGTERM, then SIGKILL) and comes back: nothing lost, nothing twice.

The broker is the session's second local broker (``scram_kafka``, its plain listener),
which these tests may stop and start; ``broker-filter reliability broker-restart`` runs the
same scenario with more stops over a longer stream.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

from broker_filter_proving.reliability.scenarios import DAEMON_SECTIONS, broker_restart_run, labelled_stream, reference_run
from broker_filter.streams.kafka import KafkaSink, KafkaSource

pytestmark = pytest.mark.kafka

OBJECTS = 12  # ~750 alerts
SECTIONS = {**DAEMON_SECTIONS, "scoring": {"min_points": 60}}  # few scorings: see test_crash.py


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _capturing_logger() -> tuple[logging.Logger, _Lines]:
    logger = logging.getLogger(f"test-librdkafka-{uuid.uuid4().hex[:6]}")
    lines = _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, lines


def test_each_client_gets_only_the_properties_of_its_role():
    """One ``[kafka] client`` table feeds both clients; librdkafka must not warn that it ignores some."""
    logger, lines = _capturing_logger()
    client = {"group.instance.id": "daemon-0", "session.timeout.ms": 6000, "linger.ms": 20, "logger": logger}
    sink = KafkaSink("127.0.0.1:1", client=client)
    source = KafkaSource("127.0.0.1:1", "group", ["topic"], client=client)
    sink.poll(0.5)
    source.consume(1, 0.5)
    source.close()
    warnings = [line for line in lines.lines if "CONFWARN" in line]
    assert warnings == []


def test_init_transactions_waits_for_a_broker_that_is_still_starting(scram_kafka):
    """Start-up while the broker is down: retried with back-off until it answers, not an exit.

    The sink starts in a thread and the broker in this one: the broker dies with the thread
    that started it (``PR_SET_PDEATHSIG``), and this thread outlives the test.
    """
    scram_kafka.stop()
    made: list = []
    began = time.monotonic()
    starter = threading.Thread(target=lambda: made.append(KafkaSink(scram_kafka.bootstrap, transactional_id=f"tx-{uuid.uuid4().hex}", timeout=2.0)))
    starter.start()
    time.sleep(3.0)
    scram_kafka.start()
    starter.join(120)
    waited = time.monotonic() - began
    assert made, "init_transactions did not return within 2 minutes of the broker's start"
    assert waited > 3.0  # longer than one call's timeout and the broker's absence: it did retry
    sink = made[0]
    sink.begin()
    sink.abort()


def test_broker_sigterm_and_sigkill_mid_stream_lose_and_duplicate_nothing(scram_kafka, deployment, inferencer, tmp_path):
    stream = labelled_stream(tmp_path, objects=OBJECTS, seed=5, garbage_every=100)
    reference = reference_run(stream, tmp_path, inferencer, SECTIONS)
    target = deployment(scram_kafka.bootstrap)
    outcome = broker_restart_run(scram_kafka, target, stream, reference, tmp_path, stops=["SIGTERM", "SIGKILL"], seed=5,
                                 downtime_s=2.0, sections=SECTIONS)
    assert outcome.passed, outcome.details
    assert outcome.details["stops_mid_stream"] == 2, outcome.details
    assert outcome.lost == outcome.duplicated == 0
