"""The guest side: the agent (a 64-bit guest program driven one access at a time) and its
assembly source, assembled with binutils on first use."""
