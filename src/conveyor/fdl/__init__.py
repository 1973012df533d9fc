"""Workflow definitions (FDL files) → `model.Service` objects."""

from conveyor.fdl.oscar import Clusters, Workflow, load_fdl, parse_fdl

__all__ = ["Clusters", "Workflow", "load_fdl", "parse_fdl"]
