"""Training: the loop, its state, data, losses, schedule, EMA, checkpoints for resume, run reports."""
