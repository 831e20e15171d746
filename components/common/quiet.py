"""Libraries that log every step at INFO: raise a logger's level for the length of a block."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """`name`'s logger at `level` inside the block, its own level again after (DVC attaches stdout
    handlers at INFO on import; GX logs a line per rendered Data Docs page)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
