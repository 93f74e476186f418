"""kill -9 of the daemon mid-stream (3 times here; 20+ in the long run): exactly once, same records, same state."""

from __future__ import annotations

import pytest

from broker_filter_proving.reliability.scenarios import DAEMON_SECTIONS, crash_run, labelled_stream, reference_run

pytestmark = pytest.mark.kafka

KILLS = 3
OBJECTS = 40  # ~1,800 alerts
#: On 2 CPU cores a scoring costs ~0.1-3 s (period search + model): only objects with many
#: points are scored, so that the reference run and the crashed run fit the CI budget.
#: A transaction holds at most ``queue_max`` alerts: 128 makes ~12 of them in this stream, so
#: that each of the kills (most come after an incarnation's first commit) lands mid-stream.
SECTIONS = {**DAEMON_SECTIONS, "scoring": {"min_points": 60}, "inference": {**DAEMON_SECTIONS["inference"], "queue_max": 128}}


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(kafka_bootstrap, deployment, inferencer, tmp_path):
    stream = labelled_stream(tmp_path, objects=OBJECTS, seed=11, garbage_every=100)
    reference = reference_run(stream, tmp_path, inferencer, SECTIONS)
    # Static membership: a restarted incarnation takes its predecessor's partitions at once,
    # instead of waiting for the killed consumer's session to expire.
    target = deployment(kafka_bootstrap, client={"group.instance.id": "reliability-crash-0"})
    outcome = crash_run(target, stream, reference, tmp_path, kills=KILLS, seed=11, sections=SECTIONS)
    assert outcome.passed, outcome.details
    assert outcome.details["kills_mid_stream"] == KILLS, outcome.details
    assert outcome.lost == outcome.duplicated == 0
