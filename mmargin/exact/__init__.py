"""Exact minimal margins where a closed form or a solver exists.

These are both a feature (the reported margin then has ``lower_bound == margin``) and the
oracle the engine's tests are checked against.
"""
