"""Logging: every module logs to ``logging.getLogger(__name__)`` (under ``tritongen``); the CLI attaches the
handler (:func:`attach_cli_handler`). :func:`quieted` silences other libraries' loggers for one stage, instead
of switching logging off for the whole process."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

PACKAGE_LOGGER = "tritongen"


@contextlib.contextmanager
def quieted(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise the named loggers (``""``: the root logger, which some libraries log to directly) to ``level`` for
    the duration; their previous levels come back afterwards. Other loggers are left alone."""
    loggers = [logging.getLogger(name) if name else logging.getLogger() for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous):
            logger.setLevel(old)


def attach_cli_handler(debug: bool = False) -> logging.Handler:
    """Send the ``tritongen`` loggers' warnings (everything with ``debug``) to stderr, once."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in logger.handlers:
        if getattr(handler, "_tritongen_cli", False):
            handler.setLevel(logging.DEBUG if debug else logging.WARNING)
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler._tritongen_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    return handler
