"""The progress callback type every long stage accepts: one human-readable line per call."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
