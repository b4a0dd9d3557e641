"""Evaluation: COD metrics (PySODMetrics) and scoring checkpoints on test sets."""
