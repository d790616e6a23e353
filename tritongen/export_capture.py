"""Export attempts run quietly: everything torch prints goes to a log file, the user gets one line.

The ONNX exporters write progress lines to stdout, graph dumps through :mod:`logging`, C++ warnings straight
to file descriptor 2, and Python warnings. :func:`captured_output` catches all four for the length of one
attempt; :func:`export_log_from_text` writes them (with the exception and its traceback) to a log file whose
path the one-line error names.

Logs go to ``$TRITONGEN_LOG_DIR`` when set, else ``<temp dir>/tritongen-logs/`` (``/tmp/tritongen-logs`` on
Linux): never into the repository, whose staging folder is removed when a build fails and where Triton would
take a hidden folder for a model. Each log is a new file (``export-<model>-XXXX.log``, mode 0600).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR_ENV = "TRITONGEN_LOG_DIR"
LOG_DIR_NAME = "tritongen-logs"
MAX_CAPTURED_BYTES = 8 * 2**20  # of one attempt's output kept for the log


@dataclass
class Captured:
    """What one export attempt printed; filled in when :func:`captured_output` exits."""

    text: str = ""
    warnings: list[warnings.WarningMessage] = field(default_factory=list)


def _stream_handlers() -> list[logging.StreamHandler]:
    """Handlers that print to the terminal (torch's own trace-file handlers are left alone)."""
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and id(getattr(h, "stream", None)) in consoles
    ]


@contextlib.contextmanager
def _fds_to(target: int) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``target`` (C++ code writes there directly), then restore them."""
    saved = []
    for fd in (1, 2):
        try:
            saved.append((fd, os.dup(fd)))
        except OSError:  # closed: nothing to redirect
            continue
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]  # None: no such stream, suppressed
    for fd, _ in saved:
        os.dup2(target, fd)
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    """Catch stdout, stderr (Python and file descriptor level), log records and warnings; errors propagate."""
    captured = Captured()
    text = io.StringIO()
    handlers = _stream_handlers()
    with tempfile.TemporaryFile() as raw, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        previous = [h.setStream(text) for h in handlers]
        try:
            with _fds_to(raw.fileno()), contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield captured
        finally:
            for handler, stream in zip(handlers, previous):
                handler.setStream(stream)
            raw.seek(0)
            native = raw.read(MAX_CAPTURED_BYTES).decode("utf-8", "replace")
            captured.warnings = list(caught)
            shown = [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in caught]
            parts = [text.getvalue()[:MAX_CAPTURED_BYTES], native, "\n".join(shown)]
            captured.text = "\n".join(p.rstrip() for p in parts if p.strip())


def exception_text(exc: BaseException) -> str:
    """The exception with its chain and traceback, as Python prints it."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def log_dir() -> Path:
    """Where export logs go: ``$TRITONGEN_LOG_DIR`` or ``<temp dir>/tritongen-logs``."""
    chosen = os.environ.get(LOG_DIR_ENV)
    return Path(chosen).expanduser() if chosen else Path(tempfile.gettempdir()) / LOG_DIR_NAME


def export_log_from_text(model_name: str, sections: list[tuple[str, str]]) -> Path | str:
    """Write ``sections`` (title, text) to a new log file; its path, or why it could not be written."""
    body = "".join(f"===== {title}\n{text.rstrip()}\n\n" for title, text in sections)
    directory = log_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"export-{model_name}-", suffix=".log", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(body)
    except OSError as exc:
        return f"torch's output could not be saved in {directory} ({exc.strerror or exc}; set ${LOG_DIR_ENV})"
    return Path(name)
