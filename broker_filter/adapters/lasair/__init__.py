"""broker-filter classifications as Lasair annotations: a consumer of our classification topic.

Lasair (and ANTARES, with the same shape) lets an external classifier attach an *annotation*
to an object: ``POST {endpoint}/annotate/`` with a token (``Authorization: Token ...``) and
the form fields ``objectId``, ``topic`` (the annotator's name, agreed with Lasair),
``classification`` (a short string), ``version`` (at most 16 characters), ``explanation``,
``classdict`` (a JSON object) and ``url`` (Lasair's API documentation and its
``lasair_client.annotate``). :class:`Annotator` reads our classification records
(``read_committed``: only what the daemon committed), keeps the scored ones that pass its
filter, and hands each to an :class:`AnnotationClient`: :class:`LasairHttpClient` for the
service, or any object with the same ``annotate`` method (another broker, a test double).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from broker_filter.outputs import decode

log = logging.getLogger(__name__)
LASAIR_ZTF_ENDPOINT = "https://lasair-ztf.lsst.ac.uk/api"
MAX_VERSION_CHARS = 16


@dataclass(frozen=True)
class Annotation:
    """One object's annotation, in the service's field names."""

    objectId: str  # noqa: N815 - the service's name
    topic: str
    classification: str
    version: str
    explanation: str
    classdict: dict[str, Any]
    url: str


class AnnotationClient(Protocol):
    def annotate(self, annotation: Annotation) -> None: ...


class LasairHttpClient:
    """Posts annotations to Lasair's API with a token (read it from a file or the environment, never a config file)."""

    def __init__(self, token: str, endpoint: str = LASAIR_ZTF_ENDPOINT, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout, transport=transport,
                                    headers={"Authorization": f"Token {token}"})

    def annotate(self, annotation: Annotation) -> None:
        form = {**vars(annotation), "classdict": json.dumps(annotation.classdict)}
        response = self._client.post("/annotate/", data=form)
        if response.status_code != 200:
            raise RuntimeError(f"Lasair refused the annotation of {annotation.objectId}: HTTP {response.status_code} {response.text[:200]}")

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class Annotator:
    """Classification records -> annotations. ``topic``: the annotator's name at Lasair; ``keep``:
    which scored records to annotate (default: every scored one; e.g. ``lambda r: r["novel"]``)."""

    client: AnnotationClient
    topic: str
    version: str
    url: str = "https://github.com/broker-filter/broker-filter"
    keep: Callable[[Mapping[str, Any]], bool] = lambda record: True

    def __post_init__(self) -> None:
        if len(self.version) > MAX_VERSION_CHARS:
            raise ValueError(f"Lasair takes versions of at most {MAX_VERSION_CHARS} characters, got {self.version!r}")

    def annotation(self, record: Mapping[str, Any]) -> Annotation | None:
        """The annotation of one classification record (None: not scored, or not kept)."""
        if record["status"] != "scored" or not self.keep(record):
            return None
        top = record["top_class"]
        novelty = "novel" if record["novel"] else "not novel"
        return Annotation(
            objectId=record["object_id"],
            topic=self.topic,
            classification=top,
            version=self.version,
            explanation=(f"{top} with probability {record['probabilities'][top]:.2f} from {record['n_points']} points "
                         f"({','.join(record['bands_used'])}); {novelty} (p = {record['novelty_p_value']:.3f})"),
            classdict={"probabilities": record["probabilities"], "energy": record["energy"],
                       "novelty_p_value": record["novelty_p_value"], "novel": record["novel"],
                       "n_points": record["n_points"], "alert_id": record["alert_id"], "bundle_id": record["bundle_id"]},
            url=self.url,
        )

    def annotate(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Annotate what is kept of ``records``; returns how many were sent."""
        sent = 0
        for record in records:
            annotation = self.annotation(record)
            if annotation is not None:
                self.client.annotate(annotation)
                sent += 1
        return sent

    def consume(self, source, *, max_messages: int | None = None, idle_s: float = 10.0) -> int:
        """Annotate from a :class:`~broker_filter.streams.kafka.KafkaSource` of our classification topic.

        Offsets are committed after each poll's annotations were sent (at least once: the
        service keeps the latest annotation per object and topic, so a repeat is harmless).
        Stops after ``max_messages`` records, or ``idle_s`` without one.
        """
        seen = sent = 0
        quiet = 0.0
        while max_messages is None or seen < max_messages:
            messages = source.consume(500, 1.0)
            if not messages:
                quiet += 1.0
                if quiet >= idle_s:
                    break
                continue
            quiet = 0.0
            sent += self.annotate(decode("classification", m.value) for m in messages)
            seen += len(messages)
            source.commit({(m.topic, m.partition): m.offset + 1 for m in messages})
        log.info("annotated %d of %d classification records", sent, seen)
        return sent
