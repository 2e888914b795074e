"""Training: the Tuner facade, the run, the Trainer glue, checkpoints, progress, estimates, recipes."""
