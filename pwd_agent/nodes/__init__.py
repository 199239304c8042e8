"""Graph nodes: one stage per file, one public node each."""
