"""broker-filter: variable-star classification and novelty flags for alert streams.

One namespace, three layers: ``broker_filter.streams`` (Kafka, Avro, archives) and
``broker_filter.model`` (light curves, the network, training, bundles) never import the
daemon; the rest of ``broker_filter`` (state, batching, inference serving, metrics, the
command line) wires them together. Other brokers call the library API,
:mod:`broker_filter.api` (``Classifier``, ``from_ztf``, ``from_rubin``). This module stays import-light so that importing a
layer does not pull in the others.
"""

__version__ = "0.1.0"

__all__ = ["Classifier", "from_rubin", "from_ztf", "__version__"]

_LIBRARY_API = ("Classifier", "from_rubin", "from_ztf")


def __getattr__(name: str):
    """``from broker_filter import Classifier`` without importing torch on ``import broker_filter``."""
    if name in _LIBRARY_API:
        from broker_filter import api

        return getattr(api, name)
    raise AttributeError(f"module 'broker_filter' has no attribute {name!r}")
