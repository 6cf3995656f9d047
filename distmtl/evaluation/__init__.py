"""Evaluation beyond the training loop: the transfer-learning baseline and representation analysis."""
