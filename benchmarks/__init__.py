"""Benchmarks run by `make bench` (each prints one JSON summary as its last line)."""
