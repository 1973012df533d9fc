"""The supervisor: stage-in, run the script, stage-out. The same on every backend."""
