"""Tools: speed/memory benchmark, learning-quality benchmark, attention-backend check."""
