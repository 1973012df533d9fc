"""Script runners: how a job's script is wrapped and run, wherever the job was scheduled."""
