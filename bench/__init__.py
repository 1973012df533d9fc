"""Benchmarks, not tests: Conveyor against real baselines on the same machine in the same invocation.

`python -m bench.suite --help` is the entry point; the other modules are its parts, and the older
one-purpose scripts (`files_end_to_end.py`, `event_latency.py`, `queue_backpressure.py`...) share them.
"""
