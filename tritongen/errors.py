"""The one exception type users see.

Every user-facing failure raises :class:`TritongenError` with what went wrong and how to fix it. The CLI
turns it into one line on stderr and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class TritongenError(Exception):
    """A problem the user can fix: bad input, a missing tool, a failed gate.

    ``problem`` says what is wrong, ``fix`` what to do about it. ``details`` holds extra lines (a per-output
    parity table, a server log excerpt) that the CLI prints below the one-line message.
    """

    def __init__(self, problem: str, fix: str = "", details: str = "", exit_code: int = 1) -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        self.details = details
        self.exit_code = exit_code
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one line: problem and fix (what the CLI prints after ``error:``)."""
        return f"{self.problem}: {self.fix}" if self.fix else self.problem

    def __str__(self) -> str:
        """The line and, below it, the details, so that a traceback in Python shows the list a message refers to
        ("the config.pbtxt files named below", a parity table)."""
        return f"{self.message}\n{self.details}" if self.details else self.message


@contextlib.contextmanager
def errors_naming(shown: object, read: object) -> Iterator[None]:
    """Within the block, a :class:`TritongenError` that names ``read`` (a private copy of a user's file) names
    ``shown`` (the user's path) instead."""
    try:
        yield
    except TritongenError as exc:
        if str(read) != str(shown):
            exc.problem, exc.fix, exc.details = (
                text.replace(str(read), str(shown)) for text in (exc.problem, exc.fix, exc.details)
            )
            exc.args = (exc.message,)
        raise
