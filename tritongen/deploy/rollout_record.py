"""The rollout record: ``<model>/tritongen-rollout.json``, which version is live, the step in progress, the history.

Written atomically (a temporary file at the top of the repository, where Triton and verify look at nothing,
then ``os.replace``), so a reader sees the old record or the new one. ``pending`` is the step a run started and
has not finished: the next run finishes it (a switch the gate allowed) or undoes it (a gate that did not end).

A server restart applies ``config.pbtxt`` again (Triton's default policy: the newest version), whatever the record
says is live: ``serve`` with explicit model control loads the recorded version back after the start
(:func:`restore_recorded_versions`); elsewhere :func:`served_warnings` names each model where the two differ, with
the command that returns to the recorded version (``serve``'s banner, ``rollout`` and ``rollback`` print it).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
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

    def last_change(self) -> str:
        """The last finished rollout or rollback, in words (e.g. ``rollback 3 -> 1 at 2026-12-06T07:30:00Z``)."""
        for event in reversed(self.history):
            if str(event.get("result", "")).startswith("promoted"):
                return f"{event.get('action')} {event.get('from')} -> {event.get('to')} at {event.get('at', '?')}"
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


def served_warnings(repo: Path, served: Mapping[str, Sequence[int]], model_control: str = "explicit") -> list[str]:
    """One ``warning:`` line per model of ``served`` (name -> the versions the server holds READY) whose rollout
    record in ``repo`` says another version is live, as after a server restart (which loads ``config.pbtxt``'s
    versions, the newest by default), with the command that returns to the recorded one. Models without a record,
    with an unreadable one (``verify`` reports it), or whose recorded version has no folder any more, get none."""
    lines = []
    for name in sorted(served):
        model_dir = Path(repo) / name
        if not record_path(model_dir).is_file():
            continue
        try:
            record = read_record(model_dir)
        except TritongenError:
            continue
        versions = sorted(int(v) for v in served[name])
        if record.live is None or versions == [record.live] or not (model_dir / str(record.live)).is_dir():
            continue
        command = f"tritongen rollback {shlex.quote(str(repo))} {shlex.quote(name)} --to-version {record.live}"
        if model_control != "explicit":  # rollback needs a server that loads and unloads on request
            serve = f"tritongen serve {shlex.quote(str(repo))} --model-control explicit"
            command = f"restart serve with explicit model control ({serve}), then run {command}"
        else:
            command = f"run {command}"
        serves = f"version {versions[0]}" if len(versions) == 1 else f"versions {', '.join(map(str, versions))}"
        lines.append(
            f"warning: '{name}' serves {serves}, but its rollout record says version {record.live} is live "
            f"({record.last_change()}; a server restart loads config.pbtxt's versions, the newest by default): "
            f"to return to it, {command}"
        )
    return lines


def with_version_policy(config: Mapping[str, Any], versions: Sequence[int], name: str | None = None) -> dict[str, Any]:
    """``config`` (a model config as JSON) serving exactly ``versions`` (``version_policy: specific``), renamed to
    ``name`` if given."""
    out = copy.deepcopy(dict(config))
    out["version_policy"] = {"specific": {"versions": [int(v) for v in versions]}}
    if name is not None:
        out["name"] = name
    return out


def restore_recorded_versions(server: Any, timeout_s: float = 300.0) -> list[str]:
    """On a server just started with explicit model control: load, for each model whose rollout record names a live
    version other than the ones served (a restart loads ``config.pbtxt``'s versions, the newest by default), that
    version with ``version_policy: specific`` from the repository the server reads (serve's checked copy, where the
    record was copied too), so a rollback outlives a restart and a version built since reaches traffic through
    ``rollout``'s gate. Returns one line per model restored, or a ``warning:`` line where the load failed (the
    server keeps what it loaded)."""
    from ..client import ModelLoadError, Triton

    repo = Path(server.spec.repo)
    lines: list[str] = []
    records = {}
    for name in server.models:
        model_dir = repo / name
        if not record_path(model_dir).is_file():
            continue
        try:
            record = read_record(model_dir)
        except TritongenError:
            continue  # verify reports it; served_warnings skips it too
        if record.live is not None and (model_dir / str(record.live)).is_dir():
            records[name] = record
    if not records:
        return lines
    with Triton(server.grpc_url, "grpc", timeout_s=timeout_s, headers=server.admin_headers("grpc")) as triton:
        for name, record in sorted(records.items()):
            live = int(record.live or 0)
            served = triton.ready_versions(name)
            if served == [live]:
                continue
            was = ", ".join(map(str, served)) or "none"
            try:
                triton.load(name, with_version_policy(triton.model_config(name), [live]), timeout_s)
                _wait_for_versions(triton, name, [live], timeout_s)
            except (ModelLoadError, TritongenError) as exc:
                lines.append(
                    f"warning: '{name}': its rollout record says version {live} is live, but loading it failed "
                    f"({exc}); the server serves {was} (config.pbtxt's versions)"
                )
                continue
            lines.append(
                f"'{name}': serving version {live}, as its rollout record says ({record.last_change()}); "
                f"config.pbtxt's versions would serve {was} (tritongen rollout moves it on through the gate)"
            )
    return lines


def _wait_for_versions(triton: Any, name: str, versions: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while triton.ready_versions(name) != versions:
        if time.monotonic() > deadline:
            raise TritongenError(
                f"'{name}' did not come to serve versions {versions} within {timeout_s:g} s", "see the server log"
            )
        time.sleep(0.1)


def server_warnings(server: Any, repo: Path) -> list[str]:
    """:func:`served_warnings` for a server ``tritongen serve`` started (a ``RunningServer``) on ``repo``: the versions
    it serves are asked for once; a server that does not answer gets no warning."""
    from ..client import Triton

    if not any(record_path(Path(repo) / name).is_file() for name in server.models):
        return []  # no rollout recorded: nothing to ask the server
    try:  # over gRPC: a SIGTERM (serve's stop) during an HTTP call made gevent print a traceback of it
        with Triton(server.grpc_url, "grpc", timeout_s=5, headers=server.admin_headers("grpc")) as triton:
            index = triton.repository_index()
    except TritongenError:
        return []
    served: dict[str, list[int]] = {}
    for entry in index:
        if entry["state"] == "READY" and entry["version"].isdigit():
            served.setdefault(entry["name"], []).append(int(entry["version"]))
    return served_warnings(repo, served, server.spec.model_control)
