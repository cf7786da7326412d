"""Library output goes through the "toolkit" logger, never print.

Entry points (the `altk` command, a sweep's worker processes) call `to_stdout()` so the
messages show as plain lines; in a notebook they are silent unless you ask for them with
`logging.getLogger("toolkit").setLevel(logging.INFO)` plus a handler, or pass `log=print`
to the functions that take one.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("toolkit")


def info(message: str) -> None:
    """Log one message at INFO on the "toolkit" logger (the default `log=` callable)."""
    logger.info(message.rstrip("\n"))


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (a notebook or a test may swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stdout
        pass


def to_stdout(level: int = logging.INFO) -> None:
    """Show the toolkit's messages as plain lines on stdout (idempotent)."""
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    logger.setLevel(level)
    logger.propagate = False
