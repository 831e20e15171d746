"""Model Merge (RecFound 4.4): TIES over checkpoints of one run."""
