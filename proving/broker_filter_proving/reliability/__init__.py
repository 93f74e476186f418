"""Reliability proofs of the daemon against a real Kafka broker (issue 6).

The same code serves the CI suite (``tests/reliability``, small counts) and the long runs
(``python -m broker_filter_proving.reliability fuzz --cases 100000``; the Kafka scenarios take their
counts as arguments). One code path, so a long run proves what the CI cases check, only
more often. ``docs/RELIABILITY.md`` records what was measured.

Modules, one job each:

* :mod:`~broker_filter_proving.reliability.craft` builds alert payloads in the real survey schemas
  from a simulated labelled stream (the seed of every bad input and fuzz case);
* :mod:`~broker_filter_proving.reliability.fuzz` mutates payloads and records and checks the
  decoder's and the state merge's contracts on each;
* :mod:`~broker_filter_proving.reliability.bad_input` is the matrix of malformed inputs, each with
  the outcome it must have;
* :mod:`~broker_filter_proving.reliability.harness` runs the daemon as a separate process (so that
  it can be killed with SIGKILL), reads our topics with ``read_committed`` and accounts for
  every input alert;
* :mod:`~broker_filter_proving.reliability.scenarios` composes those into the crash, broker-restart
  and overload scenarios.

Nothing here is imported by the daemon itself.
"""
