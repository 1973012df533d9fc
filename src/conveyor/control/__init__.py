"""The control plane: the decisions about services and jobs, taken for the API, the CLI and the dashboard."""
