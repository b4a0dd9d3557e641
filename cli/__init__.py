"""Click commands of ``train_ultimate.py``, one file per command."""
