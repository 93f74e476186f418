"""``broker-filter run --config FILE``: the streaming daemon (see :mod:`broker_filter.daemon`)."""

from __future__ import annotations

import argparse
import signal
import threading

from broker_filter.logging_setup import fatal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the streaming daemon",
        description=(
            "Consume alerts from Kafka, keep light curves, classify, and publish classification, "
            "novelty and dead-letter topics (exactly once by default). Every config key can be "
            "set by an environment variable BROKER_FILTER_<SECTION>_<KEY>. SIGTERM finishes the "
            "batch in flight, commits and exits 0."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML config (see deploy/config/broker-filter.toml)")
    parser.set_defaults(handler=run)


def _hold_stop_signals() -> threading.Event:
    """Record SIGTERM/SIGINT that arrive during start-up (imports, model load, broker
    checks take seconds) so that a stop asked for then still ends in a clean exit 0,
    as service managers expect, instead of the default abrupt death."""
    requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: requested.set())
    return requested


def run(args: argparse.Namespace) -> int:
    early_stop = _hold_stop_signals()
    import logging

    from broker_filter.config import ConfigError, load_config

    # The config is read before the heavy imports (torch, the model, Kafka clients: seconds),
    # so that a missing or malformed file stops start-up at once, with one line.
    try:
        config = load_config(args.config)
    except ConfigError as error:
        return fatal(f"broker-filter run: {error}")

    from broker_filter.daemon import Daemon, DaemonError
    from broker_filter.logging_setup import setup_logging
    from broker_filter.metrics import Metrics
    from broker_filter.pipeline import pipeline_from_config
    from broker_filter.preflight import PreflightError, ensure_output_topics, reach_brokers
    from broker_filter.rekey import Rekeyer
    from broker_filter.state import StateError
    from broker_filter.model.bundle import BundleError

    try:
        setup_logging(config.logging, args)
        view = reach_brokers(config)
        ensure_output_topics(config, view)
        metrics = Metrics()
        pipeline = pipeline_from_config(config, metrics)
        metrics.serve(config.metrics.host, config.metrics.port)
    except (ConfigError, PreflightError, BundleError, StateError, OSError) as error:
        return fatal(f"broker-filter run: {error}")
    rekeyer = None
    inputs = config.kafka.input_topics
    if config.rekey.enabled:
        rekeyer = Rekeyer(config)
        rekeyer.start()
        inputs = (config.rekey.topic,)
    daemon = Daemon(config, pipeline, metrics, input_topics=inputs, upstream=rekeyer)
    daemon.install_signal_handlers()
    if early_stop.is_set():
        daemon.stop_requested.set()
    try:
        return daemon.run()
    except DaemonError as error:
        logging.getLogger("broker_filter").error("%s", error)
        return fatal(f"broker-filter run: {error}", 1)
    except StateError as error:  # the state cannot be written (disk full): nothing committed is lost
        return fatal(f"broker-filter run: {error}")
    finally:
        if rekeyer is not None:
            rekeyer.stop()
        pipeline.inferencer.close()
