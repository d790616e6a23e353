"""The form of ``<model>/tritongen-rollout.json``, the record ``tritongen rollout``/``rollback`` keep: the data
model and the one reading of it (:func:`record_from_data`), shared by rollout (:mod:`tritongen.deploy.rollout_record`
reads and writes the file) and ``verify`` (which must refuse what rollout refuses)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from .layout import MAX_VERSION
from .names import one_line, shown

TOOL = "tritongen-rollout"
GATE_STEP, SWITCH_STEP = "gate", "switch"  # a candidate under test / the live version being replaced
HISTORY_KEPT = 50  # the latest events; before them, those the gate's refusals rest on (RolloutRecord.with_event)
# refusals (each with its forced rollback) kept so, at most: a record is read up to 1 MiB (ROLLOUT_RECORD_MAX_BYTES)
OLDER_KEPT = 200


@dataclass(frozen=True)
class Pending:
    action: str  # "rollout" or "rollback"
    from_version: int
    to_version: int
    step: str  # GATE_STEP or SWITCH_STEP

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "from": self.from_version, "to": self.to_version, "step": self.step}


@dataclass(frozen=True)
class RolloutRecord:
    model: str
    live: int | None = None  # the version the last finished rollout/rollback left serving
    previous: int | None = None  # what `rollback` returns to
    pending: Pending | None = None
    history: tuple[dict[str, Any], ...] = field(default=())

    def with_event(self, event: dict[str, Any]) -> RolloutRecord:
        stamped = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **event}
        return replace(self, history=_kept((*self.history, stamped)))

    def gate_refusal(self, version: int) -> dict[str, Any] | None:
        """The history's event where the gate refused a rollout to ``version``, when that is the last gate verdict
        on it (a later rollout to it that the gate passed clears it; a forced rollback does not); else None."""
        for event in reversed(self.history):
            if event.get("action") == "rollout" and event.get("to") == version:
                if event.get("result") == "refused":
                    return event
                if str(event.get("result", "")).startswith("promoted"):
                    return None
        return None

    def last_promoted_to(self) -> int | None:
        """The version the last finished rollout or rollback led to (None without one)."""
        for event in reversed(self.history):
            if str(event.get("result", "")).startswith("promoted"):
                to = event.get("to")
                return to if isinstance(to, int) and not isinstance(to, bool) else None
        return None

    def last_promotion(self) -> dict[str, Any] | None:
        """The last finished rollout or rollback event (None without one)."""
        return next((e for e in reversed(self.history) if str(e.get("result", "")).startswith("promoted")), None)

    def forced_to(self, version: int) -> bool:
        """Whether a forced rollback led to ``version`` after the gate's last refusal of it."""
        for event in reversed(self.history):
            if event.get("to") != version:
                continue
            if (
                event.get("action") == "rollback"
                and event.get("forced")
                and str(event.get("result", "")).startswith("promoted")
            ):
                return True
            if event.get("action") == "rollout" and event.get("result") == "refused":
                return False
        return False

    def last_change(self) -> str:
        """The last finished rollout or rollback, in words (e.g. ``rollback 3 -> 1 at 2026-12-06T07:30:00Z``)."""
        for event in reversed(self.history):
            if str(event.get("result", "")).startswith("promoted"):
                # read from a file anyone may have written: printed with its control characters escaped
                return one_line(
                    f"{event.get('action')} {event.get('from')} -> {event.get('to')} at {event.get('at', '?')}"[:200]
                )
        return "no finished rollout or rollback"

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": TOOL,
            "model": self.model,
            "live": self.live,
            "previous": self.previous,
            "pending": self.pending.to_json() if self.pending else None,
            "history": list(self.history),
        }


def record_from_data(data: Any, model: str) -> RolloutRecord:
    """The record in ``data`` (a parsed tritongen-rollout.json) for ``model``; ValueError naming what is not as
    tritongen writes it. The one rule for rollout, serve's pin and ``verify`` (which passed records rollout then
    refused, so a writer could block every rollout while verify said all was well)."""
    try:
        if not isinstance(data, dict) or data.get("tool") != TOOL or data.get("model") != model:
            raise ValueError("not a rollout record of this model")
        pending = data.get("pending")
        history = data.get("history", [])
        if not isinstance(history, list):
            raise ValueError("its history is not a list")
        deep = next((i for i, e in enumerate(history) if _nested_deeper(e, MAX_EVENT_DEPTH)), None)
        if deep is not None:  # written back indented, such an event grows a thousandfold past what verify reads
            raise ValueError(f"history event {deep} nests deeper than the {MAX_EVENT_DEPTH} levels tritongen writes")
        return RolloutRecord(
            model=model,
            live=_version(data.get("live")),
            previous=_version(data.get("previous")),
            pending=None if pending is None else _pending(pending),
            history=tuple(e for e in history if isinstance(e, dict)),
        )
    except (KeyError, TypeError, OverflowError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def _kept(history: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """The last :data:`HISTORY_KEPT` events and, before them, the older ones a refusal still in force rests on: the
    gate's refusal of a version (when no later gate passed it) and the last forced rollback to it after that. Cut
    at the last 50 alone, a refusal was forgotten as other rollouts went on: ``rollback --to-version`` then took
    the refused version without ``--force``, and serve's pin trusted it."""
    cut = len(history) - HISTORY_KEPT
    if cut <= 0:
        return history
    keep: list[list[int]] = []  # per refusal still in force: its index, and its forced rollback's
    for i, event in enumerate(history[:cut]):
        version = event.get("to")
        if event.get("action") != "rollout" or event.get("result") != "refused" or not isinstance(version, int):
            continue
        if RolloutRecord("", history=history[i:]).gate_refusal(version) is not event:
            continue  # a later gate verdict on the version decides
        forced = [
            j
            for j in range(i + 1, cut)
            if history[j].get("to") == version
            and history[j].get("action") == "rollback"
            and history[j].get("forced")
            and str(history[j].get("result", "")).startswith("promoted")
        ]
        keep.append([i, *forced[-1:]])
    kept = sorted(i for group in keep[-OLDER_KEPT:] for i in group)  # a refusal and its forced rollback together
    return tuple(history[i] for i in kept) + history[cut:]


MAX_EVENT_DEPTH = 3  # a history event, its gate verdict, the verdict's reasons


def _nested_deeper(value: Any, levels: int) -> bool:
    """Whether ``value`` holds lists or objects nested more than ``levels`` deep (an object of strings is 1)."""
    if not isinstance(value, (dict, list)):
        return False
    if levels == 0:
        return True
    items = value.values() if isinstance(value, dict) else value
    return any(_nested_deeper(item, levels - 1) for item in items)


def _pending(value: Any) -> Pending:
    """The step in progress, each field checked: a resumed step acts on the server."""
    if not isinstance(value, dict):
        raise ValueError("its pending step is not an object")
    action, step = value["action"], value["step"]
    if action not in ("rollout", "rollback") or step not in (GATE_STEP, SWITCH_STEP):
        raise ValueError(f"its pending step ({action!r}, {step!r}) is not a rollout's or rollback's gate or switch")
    from_version, to_version = _version(value["from"]), _version(value["to"])
    if from_version is None or to_version is None:
        raise ValueError("its pending step names no version")
    return Pending(action, from_version, to_version, step)


def _version(value: Any) -> int | None:
    """A version the record names: a number Triton could have as a folder (0 to :data:`MAX_VERSION`), or None.
    A larger one (``10**300``) is refused like any malformed record: it named a folder whose name is too long to
    look up, and ``serve``, ``deploy`` and ``serve --docker`` failed on it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_VERSION:
        raise ValueError(f"version {shown(repr(value), 40)} is not a version number (0 to {MAX_VERSION})")
    return value
