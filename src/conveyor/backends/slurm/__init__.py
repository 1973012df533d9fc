"""The Slurm backend: each job is an sbatch submission that runs the supervisor on a node."""
