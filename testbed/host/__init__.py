"""The host side: its tools and commands, the undo stack and signals, paths, per-run folders, tags, leftovers, doctor."""
