"""The rollout record: ``<model>/tritongen-rollout.json``, which version is live, the step in progress, the history.

Written atomically (a temporary file at the top of the repository, where Triton and verify look at nothing,
then ``os.replace``), so a reader sees the old record or the new one. ``pending`` is the step a run started and
has not finished: the next run finishes it (a switch the gate allowed) or undoes it (a gate that did not end).

A server restart applies ``config.pbtxt`` again (Triton's default policy: the newest version), whatever the record
says is live: ``serve`` pins the recorded version in the checked copy it serves before Triton starts
(:func:`pin_recorded_versions`); elsewhere :func:`served_warnings` names each model where the two differ, with
the command that returns to the recorded version (``serve``'s banner, ``rollout`` and ``rollback`` print it).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..files import json_file
from ..layout import ROLLOUT_RECORD_MAX_BYTES, ROLLOUT_RECORD_NAME
from ..names import one_line
from ..rollout_format import (  # the record's form, below verify (which checks it as rollout reads it)
    RolloutRecord,
    record_from_data,
)


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
        return record_from_data(data, model_dir.name)
    except (OSError, ValueError) as exc:
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


def _refusal_words(record: RolloutRecord, version: int) -> str:
    """Why the gate refused ``version``, as its history event says (its reasons, else when)."""
    event = record.gate_refusal(version) or {}
    gate = event.get("gate")
    reasons = gate.get("reasons") if isinstance(gate, dict) else None
    if isinstance(reasons, list) and reasons:
        return one_line("; ".join(str(r)[:120] for r in reasons[:2]))
    return f"refused at {one_line(str(event.get('at', 'an earlier rollout')))[:40]}"


def pin_recorded_versions(
    served: Path, signed: bool = False, repo: Path | None = None, explicit: bool = False
) -> list[str]:
    """Before a server starts on ``served`` (serve's checked copy of a repository, never the repository itself, and
    after its checks): for each model whose rollout record names a live version other than the ones its
    ``config.pbtxt`` would serve (a rollback, then a restart: Triton's default policy serves the newest), write
    ``version_policy: specific [live]`` into the copy's ``config.pbtxt``, so that the server never serves another
    version, not even for the moment a load after the start would take, and a version built since reaches traffic
    through ``rollout``'s gate. The pinned copy is validated again (the checks judged the versions the config
    loaded): a model whose live version fails is put back as it was.

    The record is not signed (rollouts write it): it is followed only where it is consistent (its last finished
    change led to the live version, and the gate did not refuse that version unless a forced rollback chose it),
    and not at all on a signed repository (``signed``), where whoever can write the repository could otherwise
    pick any older signed version. Left as it is too where an ensemble calls another version by number. Returns
    one line per model pinned, and a ``warning:`` line per model left (naming ``repo``, the repository the copy was
    made of, in the commands it gives; ``explicit``: the server starts with explicit model control, which a
    rollback needs)."""
    from google.protobuf import text_format

    from ..validate import config_pb2, validate_repository

    served = Path(served)
    configs = _configs(served)
    called: dict[str, list[tuple[str, int]]] = {}
    for ensemble, config in configs.items():
        for step in config.ensemble_scheduling.step:
            if step.model_version > 0:
                called.setdefault(step.model_name, []).append((ensemble, step.model_version))
    lines: list[str] = []
    originals: dict[str, tuple[str, int, str]] = {}  # pinned model -> (its config text, live, would serve)
    for name, model_dir, config, record, live, would in _differing(served, configs):
        was = ", ".join(map(str, would)) or "none"
        leave = f"warning: '{name}': its rollout record says version {live} is live, but "
        keep = f"serving config.pbtxt's versions ({was})"
        other = [(e, v) for e, v in called.get(name, []) if v != live]
        why = ""
        if signed:
            refused = [v for v in would if record.gate_refusal(v) is not None and not record.forced_to(v)]
            loud = ""
            if refused:
                why_refused = _refusal_words(record, refused[0])
                loud = f"; VERSION {refused[0]} NOW SERVED IS ONE THE ROLLOUT GATE REFUSED ({why_refused})"
            where = shlex.quote(str(repo)) if repo is not None else "REPO"
            command = f"tritongen rollback {where} {shlex.quote(name)} --to-version {live}"
            how = (
                f"run {command} now that the server is up (with --url at its gRPC address unless that is "
                "localhost:8001)"
                if explicit
                else f"restart serve with --model-control explicit (a rollback loads and unloads models), then run "
                f"{command} (with --url at its gRPC address unless that is localhost:8001)"
            )
            why = f"the record is not signed and the repository is: {keep}{loud}; to serve version {live}, {how}"
        elif record.last_promoted_to() != live:
            why = f"that is not where its last finished change led ({record.last_change()}): {keep}"
        elif record.gate_refusal(live) is not None and not record.forced_to(live):
            why = f"the gate refused that version and no forced rollback chose it: {keep}"
        elif other:
            why = f"ensemble '{other[0][0]}' calls version {other[0][1]}: {keep}"
        if why:
            lines.append(leave + why)
            continue
        text = (model_dir / "config.pbtxt").read_text()
        pb = config_pb2()
        config.version_policy.CopyFrom(pb.ModelVersionPolicy(specific=pb.ModelVersionPolicy.Specific(versions=[live])))
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
        originals[name] = (text, live, was)
        lines.append(
            f"'{name}': serving version {live}, as its rollout record says ({record.last_change()}); config.pbtxt's "
            f"versions would serve {was} (tritongen rollout moves it on through the gate)"
        )
    if originals:
        problems = validate_repository(served).problems_by_model
        for name, (text, live, was) in originals.items():
            if problems.get(name):
                (served / name / "config.pbtxt").write_text(text)
                lines = [line for line in lines if not line.startswith(f"'{name}': serving version")]
                lines.append(
                    f"warning: '{name}': its rollout record says version {live} is live, but that version does not "
                    f"validate with today's config.pbtxt ({problems[name][0]}): serving config.pbtxt's versions ({was})"
                )
    return lines


def unfollowed_records(repo: Path) -> tuple[str, ...]:
    """For what serves ``repo`` without ``tritongen serve`` (the Docker and Kubernetes bundles, ``serve --docker``):
    one line per model whose rollout record names a live version other than the ones its ``config.pbtxt`` serves,
    with the command that returns a running server to it. Read only."""
    return tuple(
        f"note: '{name}': its rollout record says version {live} is live ({record.last_change()}), but Triton "
        f"started this way (model control none) serves config.pbtxt's versions ({', '.join(map(str, would)) or 'none'})"
        f": to return to version {live}, add --model-control-mode=explicit --load-model=* to tritonserver's command "
        f"(rollback loads and unloads through it), then run tritongen rollback {shlex.quote(str(repo))} "
        f"{shlex.quote(name)} --to-version {live} --url HOST:PORT"
        for name, _, _, record, live, would in _differing(Path(repo), _configs(Path(repo)))
    )


def _configs(repo: Path) -> dict[str, Any]:
    """Every model's parsed config.pbtxt (those that do not parse left out: validate reports them)."""
    from ..validate import config_from_file

    configs = {}
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        try:
            configs[config_path.parent.name] = config_from_file(config_path)
        except TritongenError:
            continue
    return configs


def _differing(repo: Path, configs: Mapping[str, Any]) -> list[tuple[str, Path, Any, RolloutRecord, int, list[int]]]:
    """(name, folder, config, record, live version, versions config.pbtxt serves) of every model whose readable
    rollout record names a live version, still on disk, that its config.pbtxt would not serve alone."""
    from ..layout import version_numbers
    from ..validate import versions_to_load

    out = []
    for name, config in configs.items():
        model_dir = repo / name
        if not record_path(model_dir).is_file():
            continue
        try:
            record = read_record(model_dir)
        except TritongenError:
            continue  # verify reports it
        live = record.live
        if live is None or not (model_dir / str(live)).is_dir():
            continue
        would, _ = versions_to_load(config, version_numbers(model_dir))
        if would != [live]:
            out.append((name, model_dir, config, record, live, would))
    return out


def server_warnings(server: Any, repo: Path) -> list[str]:
    """:func:`served_warnings` for a server ``tritongen serve`` started (a ``RunningServer``) on ``repo``: the versions
    it serves are asked for once; a server that does not answer gets no warning."""
    from ..client import Triton
    from ..layout import version_from_api

    if not any(record_path(Path(repo) / name).is_file() for name in server.models):
        return []  # no rollout recorded: nothing to ask the server
    try:  # over gRPC: a SIGTERM (serve's stop) during an HTTP call made gevent print a traceback of it
        with Triton(server.grpc_url, "grpc", timeout_s=5, headers=server.admin_headers("grpc")) as triton:
            index = triton.repository_index()
    except TritongenError:
        return []
    served: dict[str, list[int]] = {}
    for entry in index:
        version = version_from_api(entry["version"])
        if entry["state"] == "READY" and version is not None:
            served.setdefault(entry["name"], []).append(version)
    return served_warnings(repo, served, server.spec.model_control)
