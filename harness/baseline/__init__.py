"""Baselines per machine and the throughput regression gate."""
