"""distmtl: distributed multi-task learning with PyTorch, Ray Train/Tune and MLflow."""

__version__ = "0.1.0"
