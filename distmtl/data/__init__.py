"""Data: sources that build in-memory sample sets, splits, datasets and train-only input noise."""
