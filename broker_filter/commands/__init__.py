"""One module per ``broker-filter`` subcommand; see :mod:`broker_filter.cli`."""
