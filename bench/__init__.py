"""Benchmarks: ``python -m bench.<name>``; each prints a table and one JSON line.

Every figure is a ratio against a baseline measured in the same run, because
the machine is shared and noisy.
"""
