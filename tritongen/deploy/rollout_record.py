"""The rollout record: ``<model>/tritongen-rollout.json``, which version is live, the step in progress, the history.

Written atomically (a temporary file at the top of the repository, where Triton and verify look at nothing,
then ``os.replace``), so a reader sees the old record or the new one. ``pending`` is the step a run started and
has not finished: the next run finishes it (a switch the gate allowed) or undoes it (a gate that did not end).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..files import json_file
from ..layout import ROLLOUT_RECORD_MAX_BYTES, ROLLOUT_RECORD_NAME

TOOL = "tritongen-rollout"
GATE_STEP, SWITCH_STEP = "gate", "switch"  # a candidate under test / the live version being replaced
HISTORY_KEPT = 50


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
        return replace(self, history=(self.history + (stamped,))[-HISTORY_KEPT:])

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": TOOL,
            "model": self.model,
            "live": self.live,
            "previous": self.previous,
            "pending": self.pending.to_json() if self.pending else None,
            "history": list(self.history),
        }


def record_path(model_dir: Path) -> Path:
    return Path(model_dir) / ROLLOUT_RECORD_NAME


def read_record(model_dir: Path) -> RolloutRecord:
    """The model's record; an empty one when there is none."""
    model_dir = Path(model_dir)
    path = record_path(model_dir)
    if not path.exists():
        return RolloutRecord(model=model_dir.name)
    fix = f"remove {path} (it only records history; the server is unchanged) and run again"
    try:
        data = json_file(path, ROLLOUT_RECORD_MAX_BYTES, follow_links=False)  # one open: checked is read
        if not isinstance(data, dict) or data.get("tool") != TOOL or data.get("model") != model_dir.name:
            raise ValueError("not a rollout record of this model")
        pending = data.get("pending")
        return RolloutRecord(
            model=model_dir.name,
            live=_version(data.get("live")),
            previous=_version(data.get("previous")),
            pending=None if pending is None else _pending(pending),
            history=tuple(e for e in data.get("history", []) if isinstance(e, dict)),
        )
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise TritongenError(f"rollout record {path} cannot be read ({exc})", fix) from None


def write_record(repo: Path, model_dir: Path, record: RolloutRecord) -> None:
    """Replace the record atomically (the temporary file lives at the top of ``repo``, which Triton never loads)."""
    text = json.dumps(record.to_json(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".tritongen-rollout-", suffix=".tmp", dir=repo)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, record_path(model_dir))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def restore_record(repo: Path, model_dir: Path, old: RolloutRecord, existed: bool) -> None:
    """Put back the record as it was before a run that changed nothing on the server."""
    if existed:
        write_record(repo, model_dir, old)
    else:
        record_path(model_dir).unlink(missing_ok=True)


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
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"version {value!r} is not a version number")
    return value
