"""Workflow definitions (FDL files) → `model.Service` objects."""

from conveyor.fdl.oscar import Workflow, load_fdl, parse_fdl

__all__ = ["Workflow", "load_fdl", "parse_fdl"]
