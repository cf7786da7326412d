"""Frozen features: fingerprinted HDF5 caches, a run's pool as features, and the probe loop."""
