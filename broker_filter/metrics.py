"""Prometheus metrics (prefix ``broker_filter_``), one registry per daemon.

The names are the project's agreed ones (README, Grafana dashboard); each has a single
writer: the pipeline core counts what it decides, the drivers count what they move.
A private :class:`prometheus_client.CollectorRegistry` (not the global one) lets tests and
two daemons in one process keep separate counts. The HTTP endpoint binds to loopback by
default: metrics reveal object ids in no label, but exposing a port is the operator's call.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

PREFIX = "broker_filter_"

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ENERGY_BUCKETS = tuple(float(e) for e in range(-30, 31, 5))  # the default bundle serves energies of about -25 to +15
_PROBABILITY_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
#: Novelty p-values are uniform on known-class objects when the stream matches the bundle's
#: calibration: the share at or below 0.05 is then about 0.05; a drift shows as a larger share.
_P_VALUE_BUCKETS = (0.01, 0.05, 0.2, 0.5, 1.0)


class Metrics:
    """Every metric of the daemon; ``serve(host, port)`` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        #: set by the daemon once its bundle is loaded and the group has given it its partitions
        self.ready = threading.Event()
        r, p = self.registry, PREFIX
        # the standard process_*, python_info and python_gc_* families (memory, CPU, open files)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(f"{p}build_info", "Always 1: the software version, the bundle served and its classifier",
                                ["version", "bundle_id", "classifier"], registry=r)
        self.served_energy = Histogram(f"{p}served_energy", "Gaussian-mixture energy of each scoring", buckets=_ENERGY_BUCKETS, registry=r)
        self.top_class_probability = Histogram(
            f"{p}top_class_probability", "Calibrated probability of the top class of each scoring", buckets=_PROBABILITY_BUCKETS, registry=r
        )
        self.novelty_p_value = Histogram(
            f"{p}novelty_p_value", "Novelty p-value of each scoring against the bundle's calibration", buckets=_P_VALUE_BUCKETS, registry=r
        )
        self.alerts_consumed = Counter(f"{p}alerts_consumed", "Input messages or archive records read", registry=r)
        self.alerts_decoded = Counter(f"{p}alerts_decoded", "Alerts decoded", ["survey"], registry=r)
        self.alerts_dead_lettered = Counter(
            f"{p}alerts_dead_lettered", "Inputs sent to the dead-letter output", ["reason"], registry=r
        )
        self.objects_held = Gauge(f"{p}objects_held", "Objects whose light curves are held in memory", registry=r)
        self.points_held = Gauge(f"{p}points_held", "Detections held in memory", registry=r)
        self.below_minimum = Counter(f"{p}below_minimum", "Alerts whose object had too few points to score", registry=r)
        self.points_trimmed = Counter(
            f"{p}points_trimmed", "Oldest points dropped to keep an object under [state] max_points_per_object", ["reason"], registry=r
        )
        self.batch_size = Histogram(f"{p}batch_size", "Objects scored per model call", buckets=_BATCH_BUCKETS, registry=r)
        self.inference_latency = Histogram(
            f"{p}inference_latency_seconds", "Model call duration", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_latency = Histogram(
            f"{p}end_to_end_latency_seconds",
            "Alert arrival (Kafka timestamp) to output commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.scorings = Counter(f"{p}scorings", "Objects scored", ["top_class"], registry=r)
        self.novelty_flags = Counter(f"{p}novelty_flags", "Objects flagged novel", ["top_class"], registry=r)
        self.consumer_lag = Gauge(f"{p}consumer_lag", "Messages behind the partition's end", ["topic", "partition"], registry=r)
        self.transactions = Counter(f"{p}transactions", "Kafka transactions", ["outcome"], registry=r)
        self.outputs_produced = Counter(f"{p}outputs_produced", "Records written", ["topic"], registry=r)
        self.last_output_timestamp = Gauge(
            f"{p}last_output_timestamp_seconds", "Unix time of the latest output commit", registry=r
        )
        self.inference_queue_depth = Gauge(f"{p}inference_queue_depth", "Alerts waiting for or in the model", registry=r)
        self.partitions_paused = Gauge(f"{p}partitions_paused", "Input partitions paused (backpressure, or waiting for the schema registry)", registry=r)
        self.schema_registry_waits = Counter(
            f"{p}schema_registry_waits", "Times a partition was paused because the schema registry did not answer", registry=r
        )

    def serve(self, host: str, port: int) -> None:
        """Start the HTTP thread (``port`` 0: no endpoint): ``/metrics`` for Prometheus, and
        ``/ready`` (200 once :attr:`ready` is set, 503 before) for a Kubernetes readiness probe."""
        if not port:
            return
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client import make_wsgi_app
        from prometheus_client.exposition import ThreadingWSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:  # a scrape every 15 s is not news
                pass

        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/ready":
                ready = self.ready.is_set()
                start_response("200 OK" if ready else "503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"ready\n" if ready else b"starting: bundle loading or partitions not assigned yet\n"]
            return metrics_app(environ, start_response)

        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=Quiet)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (tests and summaries); 0 when never set."""
        found = self.registry.get_sample_value(f"{PREFIX}{name}", labels or None)
        return 0.0 if found is None else found
