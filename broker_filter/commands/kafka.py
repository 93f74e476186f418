"""``broker-filter kafka start|stop|status``: a local Apache Kafka broker for trying things out.

``start`` runs in the foreground (Ctrl-C or ``kafka stop`` shuts the broker down cleanly)
and writes a small JSON state file (bootstrap address, process ids, log file), which
``status`` and ``stop`` read. The broker is the one the tests use
(:class:`broker_filter_proving.local_kafka.LocalKafka`): a single KRaft node on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from broker_filter.commands import proving_installed, register_without_proving
from broker_filter.logging_setup import fatal, report

HELP = "run a local single-node Kafka broker (for trying the daemon)"
DEFAULT_STATE = Path.home() / ".cache" / "broker-filter" / "local-kafka.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    if not proving_installed():
        register_without_proving(subparsers, "kafka", HELP)
        return
    parser = subparsers.add_parser("kafka", help=HELP)
    parser.add_argument("--state-file", type=Path, default=DEFAULT_STATE,
                        help="where start writes the broker's address and process ids (default: ~/.cache/broker-filter/local-kafka.json)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser("start", help="start a broker in the foreground; Ctrl-C stops it")
    start.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (0 = any free port)")
    start.add_argument("--data-dir", type=Path,
                       help="keep topics in this folder across restarts (default: a temporary folder, deleted on stop)")
    start.add_argument("--scram-user", help="also open a SASL_PLAINTEXT listener with this SCRAM-SHA-512 user")
    start.add_argument("--scram-password-file", type=Path, help="file holding the SCRAM user's password")
    start.set_defaults(handler=_start)

    actions.add_parser("stop", help="stop the broker started by 'kafka start'").set_defaults(handler=_stop)
    actions.add_parser("status", help="say whether the broker answers, and where").set_defaults(handler=_status)


def _start(args: argparse.Namespace) -> int:
    from broker_filter_proving.local_kafka import LocalKafka, LocalKafkaError, ScramUser

    running = _read_state(args.state_file)
    if running and _alive(running["cli_pid"]):
        return fatal(f"a local broker is already running (see {args.state_file}); stop it first", 1)
    scram = None
    if args.scram_user:
        if not args.scram_password_file:
            return fatal("--scram-user needs --scram-password-file")
        scram = ScramUser(args.scram_user, args.scram_password_file.read_text().rstrip("\r\n"))
    broker = LocalKafka(workdir=args.data_dir, port=args.port or None, scram=scram)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # 'kafka stop': leave through the finally below
    started = time.monotonic()
    try:
        broker.start()
        _write_state(args.state_file, broker)
        print(f"Kafka {broker.version} ready in {time.monotonic() - started:.1f} s")
        print(f"bootstrap servers: {broker.bootstrap}")
        if scram:
            print(f"SASL_PLAINTEXT (SCRAM-SHA-512, user {scram.username}): {broker.sasl_bootstrap}")
        print(f"log: {broker.log_file}\nCtrl-C (or 'broker-filter kafka stop') stops it.", flush=True)
        while broker.is_running():
            time.sleep(1)
        return fatal(f"the broker exited on its own; see {broker.log_file}", 1)
    except LocalKafkaError as exc:
        return fatal(f"cannot start Kafka: {exc}", 1)
    except KeyboardInterrupt:
        return 0
    finally:
        report("stopping the broker...")
        broker.close()
        args.state_file.unlink(missing_ok=True)


def _stop(args: argparse.Namespace) -> int:
    state = _read_state(args.state_file)
    if not state or not _alive(state["cli_pid"]):
        print("no local broker is running")
        args.state_file.unlink(missing_ok=True)
        return 0
    os.kill(state["cli_pid"], signal.SIGTERM)
    deadline = time.monotonic() + 45  # the broker's own grace period is 30 s
    while _alive(state["cli_pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(state["cli_pid"]):
        return fatal(f"the broker did not stop within 45 s (pid {state['cli_pid']})", 1)
    print("stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    state = _read_state(args.state_file)
    if not state or not _alive(state["cli_pid"]):
        print("no local broker is running")
        return 1
    try:
        brokers = AdminClient({"bootstrap.servers": state["bootstrap"]}).list_topics(timeout=5).brokers
    except Exception as exc:  # confluent_kafka.KafkaException: not answering
        print(f"broker process {state['broker_pid']} runs but does not answer on {state['bootstrap']}: {exc}")
        return 1
    print(f"running: bootstrap servers {state['bootstrap']}, {len(brokers)} broker(s), log {state['log']}")
    return 0


def _write_state(path: Path, broker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "bootstrap": broker.bootstrap,
        "sasl_bootstrap": broker.sasl_bootstrap if broker.scram else None,
        "cli_pid": os.getpid(),
        "broker_pid": broker.pid,
        "log": str(broker.log_file),
        "version": broker.version,
    }
    path.write_text(json.dumps(state, indent=2) + "\n")


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True for a running process; an exited one that its parent has not reaped yet is not."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
