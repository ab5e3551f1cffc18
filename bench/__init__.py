"""Benchmark scripts run by `make bench-*`; each prints its figures and ratios."""
