"""Execution backends: where jobs run. Each implements `conveyor.backends.base.Backend`."""
