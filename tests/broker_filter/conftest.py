"""Fixtures for the daemon's tests: a labelled alert stream, its replay outputs, Kafka topics.

The stream is simulated (``broker_filter.streams.simulate``) from a few of the repository's real labelled
light curves (``data/lightcurves``, see ``bf_support.STREAM_STARS``) in the real ZTF 4.02
schema, so every test runs on a user's clone. The model is the packaged default bundle
(``[inference] bundle`` empty), or the one named by ``$BROKER_FILTER_INFERENCE_BUNDLE``, the
daemon's own override.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bf_support import Stream, make_config, stream_lightcurves

from broker_filter.inference import Inferencer
from broker_filter.metrics import Metrics
from broker_filter.pipeline import pipeline_from_config
from broker_filter.replay import replay
from broker_filter.streams.archive import iter_archive
from broker_filter.streams.simulate import SimulationConfig, simulate


@pytest.fixture(scope="session")
def labelled_stream(tmp_path_factory) -> Stream:
    root = tmp_path_factory.mktemp("stream")
    simulate(stream_lightcurves(root / "lightcurves"), root / "alerts", SimulationConfig(survey="ztf"))
    out = root / "alerts"
    items = list(iter_archive([out], order="time"))
    assert items and all(item.alert is not None for item in items)
    return Stream(out, [i.payload for i in items], [i.alert.object_id for i in items], [i.alert.alert_id for i in items])


@pytest.fixture(scope="session")
def inferencer() -> Inferencer:
    config = make_config()
    return Inferencer(config.inference.bundle or None, "cpu", mixed_precision=False)


@pytest.fixture(scope="session")
def replayed(labelled_stream: Stream, inferencer: Inferencer, tmp_path_factory) -> Path:
    """The replay driver's outputs for the labelled stream (the reference the Kafka path must equal)."""
    out = tmp_path_factory.mktemp("replay")
    pipeline = pipeline_from_config(make_config(), Metrics(), inferencer)
    replay([labelled_stream.path], out, pipeline, max_batch=256, progress=False)
    return out


@pytest.fixture
def topics(kafka_topic_factory) -> Iterator[Callable[..., dict[str, str]]]:
    """``make(input_partitions)``: fresh input and output topics for one daemon deployment."""

    def make(input_partitions: int = 2) -> dict[str, str]:
        return {
            "input": kafka_topic_factory(input_partitions, prefix="alerts"),
            "classification": kafka_topic_factory(input_partitions, prefix="classifications"),
            "novelty": kafka_topic_factory(input_partitions, prefix="novelty"),
            "dead_letter": kafka_topic_factory(input_partitions, prefix="dead-letter"),
        }

    yield make
