"""Benchmarks behind ``broker-filter bench NAME``: each measures ours against a baseline in
the same run, so that the ratio means something on a shared, noisy machine.

A benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> BenchResult``.
"""
