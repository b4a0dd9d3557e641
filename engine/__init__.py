"""Training, evaluation and inference machinery (imports stay light: import submodules directly)."""
