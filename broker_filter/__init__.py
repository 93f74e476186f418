"""The streaming daemon: light-curve state, batching, inference serving and metrics.

It wires ``streams`` (sources and sinks) to ``model`` (preprocessing and the bundle).
"""

__version__ = "0.1.0"
