"""Benchmarks: throughput measurements, frame baselines and the in-betweening benchmark suite."""
