"""broker-filter as an AMPEL T2 unit: :class:`~broker_filter.adapters.ampel.T2BrokerFilter.T2BrokerFilter`.

Importing the unit needs ``ampel-interface`` and ``ampel-photometry`` (PyPI); this package
itself imports neither, so that ``import broker_filter.adapters`` stays light.
"""
