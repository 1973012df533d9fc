"""The Kubernetes backend: each job is one batch/v1 Job."""
