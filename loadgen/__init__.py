"""Synthetic workload (Algorithm 1), fitting it to a real click log, and the load generator (Algorithm 2)."""
