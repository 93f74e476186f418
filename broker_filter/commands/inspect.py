"""``broker-filter inspect SOURCE...``: decode archived alerts and print one JSON line each.

stdout gets ``{"object_id", "alert_id", "survey", "n_detections", "bands", "first_mjd",
"last_mjd"}`` per decoded alert; stderr gets one line per alert that did not decode, with
its file, position and reason. Exit status: 0 when everything decoded, 1 otherwise,
2 when a source does not exist.
"""

from __future__ import annotations

import argparse
import json

from broker_filter.logging_setup import fatal, warn


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="decode alert files / archives and print one JSON line per alert")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help=".avro files, .tar.gz archives or folders")
    parser.add_argument("--order", choices=("file", "time"), default="file",
                        help="file order (streams, default) or observation-time order (reads everything first)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.streams.archive import iter_archive

    failed = False
    try:
        for item in iter_archive(args.sources, order=args.order):
            if item.alert is None:
                failed = True
                warn(f"{item.origin} #{item.position}: {item.error}")
                continue
            alert = item.alert
            times = [d.time for d in alert.detections]
            print(json.dumps({
                "object_id": alert.object_id,
                "alert_id": alert.alert_id,
                "survey": alert.survey,
                "n_detections": sum(not d.upper_limit for d in alert.detections),
                "bands": sorted({d.band for d in alert.detections}),
                "first_mjd": min(times),
                "last_mjd": max(times),
            }))
    except FileNotFoundError as exc:
        return fatal(f"broker-filter inspect: {exc}")
    return 1 if failed else 0
