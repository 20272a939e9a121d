"""Triplet-loss embedding library: data, input pipeline, network, losses, metrics, utilities."""
