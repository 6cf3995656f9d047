"""Progress output: distmtl's own logger prints plain lines, without touching other libraries' logging."""

from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced, e.g. by a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        """The stream is always the current ``sys.stderr``."""


def configure_logging(level: int) -> None:
    """Send the ``distmtl`` logger's records at ``level`` and above to stderr as plain lines (idempotent)."""
    logger = logging.getLogger("distmtl")
    logger.setLevel(level)
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
