"""broker-filter: variable-star classification and novelty flags for alert streams.

One namespace, three layers: ``broker_filter.streams`` (Kafka, Avro, archives) and
``broker_filter.model`` (light curves, the network, training, bundles) never import the
daemon; the rest of ``broker_filter`` (state, batching, inference serving, metrics, the
command line) wires them together. This module stays import-light so that importing a
layer does not pull in the others.
"""

__version__ = "0.1.0"
