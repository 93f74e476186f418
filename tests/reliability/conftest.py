"""Fixtures of the reliability suite: seed alerts, a model for reference runs, daemon deployments.

The broker is the session's real Kafka (``kafka_bootstrap``) or, for broker restarts and
SCRAM, the second local broker ``scram_kafka`` (``tests/conftest.py``), which these tests
may stop and start. Counts are the CI's; ``python -m broker_filter_proving.reliability`` runs the
same scenarios with the full counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from broker_filter_proving.reliability.craft import SeedAlerts, simulate_seeds
from broker_filter_proving.reliability.harness import Deployment
from broker_filter.streams.kafka_admin import delete_topics


@pytest.fixture(scope="session")
def ztf_seeds(tmp_path_factory) -> SeedAlerts:
    return simulate_seeds(tmp_path_factory.mktemp("seeds") / "ztf", "ztf", max_objects=3)


@pytest.fixture(scope="session")
def lsst_seeds(tmp_path_factory) -> SeedAlerts:
    return simulate_seeds(tmp_path_factory.mktemp("seeds") / "lsst", "lsst", max_objects=2)


@pytest.fixture(scope="session")
def inferencer():
    """The packaged default bundle on CPU, loaded once (reference runs)."""
    from broker_filter.inference import Inferencer

    return Inferencer(None, "cpu", mixed_precision=False)


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> Iterator[Callable[..., Deployment]]:
    """``make(bootstrap, client=None) -> Deployment`` with unique topic names, deleted afterwards."""
    made: list[Deployment] = []

    def make(bootstrap: str, client: dict[str, str] | None = None) -> Deployment:
        name = f"{request.node.name.split('[')[0]}-{uuid.uuid4().hex[:8]}"
        made.append(Deployment.named(bootstrap, name, client))
        return made[-1]

    yield make
    for d in made:
        delete_topics(d.bootstrap, [d.input_topic, *d.output_topics], client=d.client)
