"""Conveyor: run a containerised script on every file that lands in a bucket."""

__version__ = "0.1.0"
