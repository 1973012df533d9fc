"""The HTTP API: OSCAR's routes (so OSCAR clients work unchanged) and Conveyor's own under /conveyor/v1."""
