"""One module per ``landscape`` subcommand; shared option groups live in :mod:`.common`."""
