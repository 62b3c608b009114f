"""Benchmarks: the service against the offline limit and a naive server, in one run."""
