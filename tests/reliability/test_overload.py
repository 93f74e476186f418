"""Input faster than the daemon can score (10x its measured rate), CI-sized: the daemon pauses
its partitions, stays under its memory bound, drains the lag to 0 and loses nothing.

``broker-filter reliability overload`` runs the same scenario for minutes (docs/RELIABILITY.md).
"""

from __future__ import annotations

import pytest

from broker_filter_proving.reliability.scenarios import DAEMON_SECTIONS, labelled_stream, overload_run
from broker_filter_proving.local_kafka import free_port

pytestmark = pytest.mark.kafka

OBJECTS = 40  # ~1,800 alerts
#: Small batches and a short queue: the queue fills within a fraction of a second of overload.
SECTIONS = {**DAEMON_SECTIONS, "inference": {**DAEMON_SECTIONS["inference"], "max_batch": 16, "queue_max": 64}}


def test_ten_times_the_processing_rate_pauses_input_and_drains_without_loss(kafka_bootstrap, deployment, tmp_path):
    stream = labelled_stream(tmp_path, objects=OBJECTS, seed=3, garbage_every=100)
    outcome = overload_run(deployment(kafka_bootstrap), stream, tmp_path, factor=10.0, seconds=0.5, rss_limit_mb=1500.0,
                           calibration=400, sections=SECTIONS, metrics_port=free_port())
    assert outcome.passed, outcome.details
    assert outcome.details["max_partitions_paused"] >= 1 and outcome.details["final_lag"] == 0
    assert outcome.lost == outcome.duplicated == 0
