"""Benchmark harness for Cost Keeper: `make bench` (see bench/README.md)."""
