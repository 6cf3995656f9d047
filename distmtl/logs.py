"""Progress output: distmtl's own logger prints plain lines, without touching other libraries' logging."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: int) -> None:
    """Send the ``distmtl`` logger's records at ``level`` and above to stderr as plain lines (idempotent)."""
    logger = logging.getLogger("distmtl")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
