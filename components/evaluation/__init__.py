"""Evaluation of user embeddings on the downstream tasks of a dataset."""
