"""``broker-filter check --config FILE``: validate a config, load the model, reach the brokers."""

from __future__ import annotations

import argparse
import json

from broker_filter.logging_setup import fatal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate a daemon config and reach its Kafka brokers",
        description=(
            "Exit 0 when the config is valid, the model bundle loads and the brokers answer with the input topics present."
        ),
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="TOML config (keys overridable by BROKER_FILTER_<SECTION>_<KEY>)"
    )
    parser.add_argument("--skip-model", action="store_true", help="do not load the model bundle")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.config import ConfigError, load_config
    from broker_filter.preflight import PreflightError, reach_brokers
    from broker_filter.streams.kafka_config import redact

    try:
        config = load_config(args.config)
        if not args.skip_model:
            from broker_filter.model.bundle import BundleError, ModelBundle

            try:
                bundle = ModelBundle.load(config.inference.bundle or None)
            except BundleError as error:
                raise ConfigError(f"[inference] bundle: {error}") from error
        view = reach_brokers(config)
    except (ConfigError, PreflightError) as error:
        return fatal(f"broker-filter check: {error}")
    report = {
        "config": args.config,
        "bootstrap_servers": config.kafka.bootstrap_servers,
        "client": redact(config.kafka.client),
        "brokers": view.brokers,
        "input_partitions": view.input_partitions,
        "delivery": config.kafka.delivery,
        "bundle_id": None if args.skip_model else bundle.bundle_id,
    }
    print(json.dumps(report))
    return 0
