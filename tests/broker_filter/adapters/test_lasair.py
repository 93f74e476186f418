"""The Lasair annotator: our classification topic (real broker) in, annotations in Lasair's documented fields out."""

from __future__ import annotations

import json
import urllib.parse
import uuid

import httpx
import pytest
from bf_support import read_jsonl

from broker_filter.adapters.lasair import Annotation, Annotator, LasairHttpClient
from broker_filter.outputs import encode
from broker_filter.streams.kafka import KafkaSink, KafkaSource


class RecordingClient:
    """A test double of the service: keeps what it was asked to post."""

    def __init__(self) -> None:
        self.annotations: list[Annotation] = []

    def annotate(self, annotation: Annotation) -> None:
        self.annotations.append(annotation)


@pytest.mark.kafka
def test_scored_records_of_our_topic_become_annotations(replayed, kafka_bootstrap, kafka_topic_factory):
    records = read_jsonl(replayed / "classifications.jsonl")
    topic = kafka_topic_factory(1, prefix="classifications")
    sink = KafkaSink(kafka_bootstrap)
    for record in records:
        sink.produce(topic, encode("classification", record), key=record["record_id"])
    sink.flush()
    client = RecordingClient()
    annotator = Annotator(client, topic="broker_filter", version="0.1.0")
    with KafkaSource(kafka_bootstrap, f"annotator-{uuid.uuid4().hex[:6]}", [topic]) as source:
        sent = annotator.consume(source, max_messages=len(records), idle_s=20)
    scored = [r for r in records if r["status"] == "scored"]
    assert sent == len(scored) == len(client.annotations) > 0
    first, annotation = scored[0], client.annotations[0]
    assert (annotation.objectId, annotation.classification) == (first["object_id"], first["top_class"])
    assert annotation.classdict["probabilities"] == pytest.approx(first["probabilities"])
    assert annotation.classdict["novelty_p_value"] == pytest.approx(first["novelty_p_value"])


def test_only_kept_records_are_annotated(replayed):
    records = read_jsonl(replayed / "classifications.jsonl")
    client = RecordingClient()
    Annotator(client, topic="broker_filter", version="0.1.0", keep=lambda r: r["novel"]).annotate(records)
    assert len(client.annotations) == sum(1 for r in records if r["status"] == "scored" and r["novel"])


def test_the_http_client_posts_the_services_documented_form_with_the_token():
    seen: list[httpx.Request] = []

    def service(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success"})

    client = LasairHttpClient("t0ken", endpoint="https://lasair.example/api", transport=httpx.MockTransport(service))
    annotation = Annotation("ZTF18abcdefg", "broker_filter", "RRAB", "0.1.0", "RRAB with probability 0.93", {"energy": -12.5}, "https://x")
    client.annotate(annotation)
    (request,) = seen
    assert request.method == "POST" and str(request.url) == "https://lasair.example/api/annotate/"
    assert request.headers["Authorization"] == "Token t0ken"
    form = dict(urllib.parse.parse_qsl(request.content.decode()))
    assert set(form) == {"objectId", "topic", "classification", "version", "explanation", "classdict", "url"}
    assert form["objectId"] == "ZTF18abcdefg" and json.loads(form["classdict"]) == {"energy": -12.5}


def test_a_refused_annotation_says_why_and_versions_longer_than_lasair_takes_are_refused():
    client = LasairHttpClient("bad", transport=httpx.MockTransport(lambda request: httpx.Response(401, text="Unauthorized")))
    with pytest.raises(RuntimeError, match="HTTP 401"):
        client.annotate(Annotation("ZTF1", "t", "RRAB", "1", "", {}, ""))
    with pytest.raises(ValueError, match="at most 16"):
        Annotator(RecordingClient(), topic="t", version="0.1.0-with-a-long-suffix")
