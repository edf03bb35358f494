"""Operator scripts (not shipped in the wheel): `cluster.py` runs a local Spark standalone cluster."""
