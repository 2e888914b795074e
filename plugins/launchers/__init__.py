"""Built-in launchers: how the processes of a training run are started (torchrun, Slurm, Ray Train)."""
