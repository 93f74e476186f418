"""Kafka, Avro and archive I/O for survey alert streams.

This package knows alerts, Avro, files and Kafka, and nothing of models: it turns bytes
into :class:`broker_filter.streams.alert.Alert` objects and records into bytes. Nothing here imports
``model`` or ``broker_filter``.
"""
