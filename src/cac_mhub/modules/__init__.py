"""Chain modules: thin adapters, one per file, that wire pure functions into the chain."""
