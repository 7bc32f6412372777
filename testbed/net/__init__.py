"""Topology building with pyroute2 inside a per-run network namespace: bridges, taps, MTU, rate."""
