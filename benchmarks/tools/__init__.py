"""Throughput and planning tools kept apart from the benchmark: metric, render and training speed, grid estimates, the v2/v3 run script."""
