"""The proofs of broker-filter: benchmarks, failure scenarios and the local Kafka they run on.

Kept out of the daemon's package (and out of its runtime image) so that what serves alerts
carries no test harness. It works from a clone of the repository: its benchmarks and
scenarios read the real data under ``data/`` and the broker recipe under ``deploy/kafka``.
Install it with ``pip install -e ./proving`` (``make venv`` does); ``broker-filter bench``,
``reliability`` and ``kafka`` need it.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root of the clone this package is installed from (editable install)."""
