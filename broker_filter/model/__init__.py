"""Light curves, preprocessing, the RNN autoencoder + GMM model, training and bundles.

This package knows light curves, tensors and training, and nothing of Kafka. The daemon
imports its preprocessing so that served inputs go through the same code as training.
Nothing here imports ``streams`` or ``broker_filter``.
"""
