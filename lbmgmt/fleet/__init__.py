"""Fleets on loopback, for the demo, the tests and the benchmarks.

- ``ports``: free ports and waiting for one to listen (the one copy of each).
- ``inprocess``: a balancer and edges as objects in the running event loop
  (``lbmgmt demo``, the console tests, in-process tests and benchmarks).
- ``processes``: the same daemons as real ``python -m lbmgmt`` processes with
  config files written by a TOML writer (end-to-end tests, benchmarks).

Nothing here listens anywhere but on 127.0.0.1 unless told to.
"""
