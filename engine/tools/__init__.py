"""Tools of the user commands: the speed/memory benchmark and the attention-backend check."""
