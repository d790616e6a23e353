"""Versioned rollouts on a running Triton with explicit model control: load, judge, switch, unload; and roll back.

Triton answers a request without a version from the highest READY version of the model (core
``ModelLifeCycle::GetModel``), and a reload keeps a READY version serving until its replacement is READY.
The new version's files are read once, after ``verify``, each hashed against its manifest (a file changed,
added or removed since is refused), and both loads below send those bytes with the request: Triton never reads
the version from the repository, so what the gate judged is what the switch serves. So:

1. **gate** (rollout only): the new version is loaded beside the live one under a candidate name
   (``<name>__tritongen_candidate``, from those files), so that it gets no traffic of ``<name>`` while
   :mod:`~tritongen.deploy.gate` compares it with the live version; then unloaded.
   A model that is a step of an ensemble is judged end to end: each golden request goes through the ensemble's
   steps as served, in order, with the candidate (or the live version) as that step. (Triton 2.51 loads an
   ensemble's steps from the repository, so an ensemble cannot call a candidate loaded from request content.)
2. **switch**: ``<name>`` is loaded with ``version_policy: specific [new]`` and the same files. Triton loads the
   new version while the live one keeps answering, then in one step (``ModelLifeCycle::OnLoadFinal``, under the
   lock that every request's version lookup takes) releases the old version and marks the new one READY. Every
   answer comes from one of the two; requests already running on the old version finish before Triton frees it
   (drain). The same holds when the new version is lower (a rollback).

One run at a time changes a model: a second one is refused, naming the holder (:mod:`.rollout_lock`).
The model folder's ``tritongen-rollout.json`` (:mod:`~tritongen.deploy.rollout_record`) holds the live version,
the one ``rollback`` returns to and the step in progress: a run that finds a step in progress finishes a switch
(the gate had passed) or undoes a gate. After a server restart Triton applies ``config.pbtxt`` again (the newest
version): ``serve`` pins the recorded version in the checked copy it serves before Triton starts
(:func:`~tritongen.deploy.rollout_record.pin_recorded_versions`); where that did not happen, ``serve`` and a run
that finds the server serving another version than the record's print a warning with the command that returns to
it (:func:`~tritongen.deploy.rollout_record.served_warnings`). A rollback to a version whose rollout the gate refused
(the record's history says so) is refused unless ``force``: it would serve that version past its gate.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..client import RequestTimedOut, Triton, default_url, model_metadata, spec_protocol
from ..end_to_end import END_TO_END_NAME, read_reference
from ..errors import TritongenError
from ..fields import check_fields
from ..files import FileTooLargeError, read_problem, regular_bytes
from ..layout import (
    ARTIFACT_DIR,
    LABELS_FILENAME,
    SAMPLES_NAME,
    WARMUP_DIR,
    artifact_dir,
    version_from_api,
    version_numbers,
)
from ..names import check_path_text, shown
from ..progress import Progress
from ..rollout_format import GATE_STEP, SWITCH_STEP, Pending, RolloutRecord
from ..served_settings import served_settings_from_config
from .gate import (
    MAX_GOLDEN_ROWS,
    GateReport,
    GateThresholds,
    GoldenSet,
    Target,
    check_labels_within,
    golden_from_file,
    golden_from_texts,
    run_gate,
    write_gate_report,
)
from .rollout_lock import rollout_lock
from .rollout_record import (
    read_record,
    record_path,
    restore_record,
    served_warnings,
    with_version_policy,
    write_record,
)

if TYPE_CHECKING:
    from ..server.admin import LocalServer, SignedFiles

CANDIDATE_SUFFIX = "__tritongen_candidate"
MAX_LOAD_BYTES = (2 << 30) - 1  # the files of one load request: gRPC and protobuf carry no larger message
ROLLOUT, ROLLBACK = "rollout", "rollback"
# a gate verdict's reasons kept in the record's event: the record stays far below the 1 MiB it is read up to with its
# 250 events (rollout_format.HISTORY_KEPT, OLDER_KEPT)
MAX_EVENT_REASONS, MAX_REASON_CHARS = 4, 200


@dataclass(frozen=True)
class RolloutSpec:
    """What to roll out. ``to_version`` None with ``action="rollback"``: the version the record says was live
    before the last rollout."""

    repo: Path
    name: str
    to_version: int | None = None
    action: str = ROLLOUT
    url: str = ""  # "": tritongen.client.default_url(protocol)
    protocol: str = ""  # "": the URL's scheme (http://, grpc://), else $TRITONGEN_URL's, else grpc
    golden: Path | None = None
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    out: Path | None = None  # where comparison.json goes; default rollout_reports/<name>-v<from>-to-v<to>
    headers: Mapping[str, str] = field(default_factory=dict)
    allow_unverified: tuple[str, ...] = ()
    timeout_s: float = 300.0
    # The files sent must be the ones the repository's signature lists under this key. None: the key of the server,
    # where serve started it with --public-key on this machine (found by its port), else no signature check.
    public_key: Path | None = None
    signature: Path | None = None  # None: REPO/.tritongen-signature.sig
    force: bool = False  # rollback only: also to a version whose rollout the gate refused

    def __post_init__(self) -> None:
        check_fields(self, self.action if self.action in (ROLLOUT, ROLLBACK) else ROLLOUT, skip=("action",))
        object.__setattr__(self, "protocol", spec_protocol(self.url, self.protocol))
        object.__setattr__(self, "url", self.url or default_url(self.protocol))
        if self.action not in (ROLLOUT, ROLLBACK):
            raise TritongenError(f"unknown action '{self.action}'", "use rollout or rollback")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise TritongenError(f"'{self.name}' is not a model name", "pass the name of a model folder in REPO")
        if self.to_version is not None and (isinstance(self.to_version, bool) or int(self.to_version) < 1):
            raise TritongenError(
                f"version {self.to_version} is not a version number", "pass a version folder's number (1 or more)"
            )
        if self.action == ROLLOUT and self.to_version is None:
            raise TritongenError("no version to roll out", "pass --to-version N")
        if self.action == ROLLOUT and self.force:
            raise TritongenError("a rollout takes no --force: it always runs the gate", "leave --force out")
        if self.timeout_s <= 0:  # (check_fields bounds it above: a day)
            raise TritongenError(f"timeout {self.timeout_s} s is not positive", "pass a positive timeout")
        for option, path in (("--golden", self.golden), ("--out", self.out)):
            if path is not None:
                check_path_text(path, option)  # quoted in the report and the record, which are UTF-8 files


@dataclass(frozen=True)
class RolloutResult:
    model: str
    action: str
    from_version: int
    to_version: int
    promoted: bool  # the new version serves alone
    live_versions: tuple[int, ...]  # READY on the server afterwards
    gate: GateReport | None = None
    resumed: str | None = None  # what a half-done step from an earlier run became
    elapsed_s: float = 0.0
    signature: str | None = None  # what the files sent were held to, beyond the manifests (None: nothing to say)

    def text(self) -> str:
        """What ``tritongen rollout``/``rollback`` print (:meth:`summary`); every result of the API has ``text()``."""
        return self.summary()

    def summary(self) -> str:
        lines = [f"resumed: {self.resumed}"] if self.resumed else []
        if self.signature:
            lines.append(f"signature: {self.signature}")
        if self.gate is not None:
            lines.append(self.gate.summary())
            if self.gate.path is not None:
                lines.append(f"comparison: {self.gate.path}")
        if self.from_version == self.to_version:
            lines.append(f"'{self.model}' version {self.to_version} is already the one serving")
        elif self.promoted:
            lines.append(
                f"{self.action}: '{self.model}' version {self.to_version} now answers every request "
                f"(version {self.from_version} unloaded) in {self.elapsed_s:.1f} s"
            )
        else:
            lines.append(f"{self.action}: version {self.to_version} refused; version {self.from_version} keeps serving")
        return "\n".join(lines)


def rollout_from_repository(spec: RolloutSpec, progress: Progress | None = None) -> RolloutResult:
    """Roll ``spec.name`` out to ``spec.to_version`` (gate first) or back (``action="rollback"``, no gate)."""
    say = progress or (lambda _line: None)
    start = time.monotonic()
    model_dir = _checked_model(spec)
    with rollout_lock(model_dir, spec.action):  # one rollout/rollback of a model at a time
        try:
            return _locked(spec, model_dir, say, start)
        except TritongenError as err:
            if "restricted" not in err.problem:
                raise
            raise TritongenError(  # the server's admin APIs want a key (--grpc-restricted-protocol and the like)
                err.problem,
                "pass the header it names with --header NAME=VALUE (the key the server was started with)",
                err.details,
            ) from None


def _locked(spec: RolloutSpec, model_dir: Path, say: Progress, start: float) -> RolloutResult:
    existed = record_path(model_dir).exists()
    record = read_record(model_dir)
    from ..client import host_port_from_url
    from ..server.admin import local_server_at

    server = local_server_at(host_port_from_url(spec.url))  # found once: its admin key and signing key belong together
    # none given: the key of a server tritongen started on this machine, found by its port
    headers = spec.headers or server.headers(spec.protocol)
    # to a server found here, by the address it was found listening on: the name is not resolved again
    with Triton(server.url(spec.url), spec.protocol, min(spec.timeout_s, 60.0), headers) as triton:
        # first whether the server lets models be loaded at all (the one refusal whose fix restarts the server)
        triton.require_model_control(min(spec.timeout_s, 60.0))
        signed_files = server.signed_digests(spec.repo, spec.public_key, spec.signature)  # before any load
        signed = _signed(spec, signed_files)  # anything: a repository not signed is refused before anything loads
        signature = _signature_words(spec, server, signed_files)
        ready = _ready(triton, spec.name, spec.url)
        resumed = None
        if record.pending is not None:
            record, resumed = _resume(triton, spec, model_dir, record, ready, say, signed)
            existed, ready = True, _ready(triton, spec.name, spec.url)
        live = ready[-1]
        target = _target(spec, record, model_dir, live)
        if spec.action == ROLLBACK:
            _check_not_refused(spec, record, target)
        if target != record.live:  # the server serves another version than the record's (after a restart, say)
            for line in served_warnings(spec.repo, {spec.name: ready}):  # nothing to say when this run returns to it
                say(line)
        if ready == [target]:
            return RolloutResult(spec.name, spec.action, target, target, False, tuple(ready), None, resumed)
        config = triton.model_config(spec.name)
        # the bytes the gate judges and the switch loads: read once, each checked against the verified manifest
        files = _model_files(model_dir, target, _digests(spec, model_dir), signed)
        step = _Step(triton, spec, model_dir, record, existed, ready)
        gate = None
        if spec.action == ROLLOUT:
            earlier = record.gate_refusal(target)
            if earlier is not None:  # judged again, perhaps under other load: the earlier verdict is worth knowing
                say(  # the record's text escaped: it is a file anyone who may write the repository can edit
                    f"note: the gate refused version {target} before (rollout {shown(earlier.get('from'), 12)} -> "
                    f"{target} at {shown(earlier.get('at', '?'), 32)}); judging it again"
                )
            gate = step.judge(config, target, files, say, _report_dir(spec, live, target))
            if not gate.passed:
                event = _event(ROLLOUT, live, target, "refused", gate)
                # a first rollout records the version that keeps serving as live: else a restart served config.pbtxt's
                # newest, the refused one, with nothing to pin it back (nor a warning)
                kept = record.live if record.live is not None else live
                write_record(spec.repo, model_dir, replace(record, live=kept, pending=None).with_event(event))
                elapsed = time.monotonic() - start
                return RolloutResult(
                    spec.name, ROLLOUT, live, target, False, tuple(ready), gate, resumed, elapsed, signature=signature
                )
            # said before the switch, whose stop (Ctrl-C, SIGTERM) ends the command before the summary prints
            say(f"gate: passed (latency ratio {gate.latency_ratio:.2f}; report {gate.path})")
        step.switch(config, target, files, say)
        record = replace(record, live=target, previous=live, pending=None)
        event = _event(spec.action, live, target, "promoted", gate)
        if spec.action == ROLLBACK and record.gate_refusal(target) is not None:
            event["forced"] = True  # past a refusal of the gate, with --force
        write_record(spec.repo, model_dir, record.with_event(event))
        after = tuple(_ready(triton, spec.name, spec.url))
        elapsed = time.monotonic() - start
        return RolloutResult(
            spec.name, spec.action, live, target, True, after, gate, resumed, elapsed, signature=signature
        )


@dataclass(frozen=True)
class _Step:
    """One step that changes the server, with the record marked ``pending`` meanwhile; when the step fails and
    the server is as it was (a refused load), the record is put back as it was."""

    triton: Triton
    spec: RolloutSpec
    model_dir: Path
    record: RolloutRecord
    existed: bool
    ready: list[int]

    def judge(
        self, config: Mapping[str, Any], target: int, files: Mapping[str, bytes], say: Progress, out: Path
    ) -> GateReport:
        spec, live = self.spec, self.ready[-1]
        ensembles = _ensembles_using(self.triton, spec.name)
        golden = _golden(spec, ensembles[0] if ensembles else spec.name, target)
        say(f"gate: loading '{spec.name}' version {target} as a candidate beside live version {live}")
        self._mark(Pending(ROLLOUT, live, target, GATE_STEP))
        try:
            gate = _gate(self.triton, spec, config, files, ensembles, golden, live, target)
            return write_gate_report(gate, out)  # a report that cannot be written undoes the gate as its errors do
        except TritongenError:
            _quiet_unload(self.triton, [spec.name + CANDIDATE_SUFFIX])
            self._restore_if_unchanged()
            raise
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where the CLI takes it as Ctrl-C: undo the gate now
            _quiet_unload(self.triton, [spec.name + CANDIDATE_SUFFIX])
            try:
                restored = self._restore_if_unchanged()
            except TritongenError:
                restored = False
            if restored:
                say(f"stopped during the gate: candidate unloaded; version {live} keeps serving")
            else:
                say(
                    "stopped during the gate: the record keeps the gate as pending (the server did not answer, or "
                    "serves other versions now); the next rollout or rollback settles it"
                )
            raise

    def switch(self, config: Mapping[str, Any], target: int, files: Mapping[str, bytes], say: Progress) -> None:
        live = self.ready[-1]
        say(f"switch: '{self.spec.name}' version {live} -> {target}")
        self._mark(Pending(self.spec.action, live, target, SWITCH_STEP))
        try:
            _switch(self.triton, self.spec.name, config, files, live, target, self.spec.timeout_s)
        except RequestTimedOut as exc:  # no answer is no refusal: Triton goes on loading, and may finish the switch
            raise TritongenError(
                f"{exc.problem}: {self._still_pending(live, target)}",
                "wait for the server (its log shows the load), then run that command",
            ) from None
        except TritongenError:
            self._restore_if_unchanged()
            raise
        except KeyboardInterrupt:  # the load request is Triton's now: it may still finish the switch
            say(f"stopped during the switch: {self._still_pending(live, target)}")
            raise

    def _still_pending(self, live: int, target: int) -> str:
        again = f"{shlex.quote(str(self.spec.repo))} {shlex.quote(self.spec.name)}"
        return (
            f"Triton may still finish loading version {target} (version {live} answers until it does); the record "
            f"keeps the switch as pending: tritongen rollout {again} --to-version {target} finishes it, tritongen "
            f"rollback {again} --to-version {live} returns"
        )

    def _mark(self, pending: Pending) -> None:
        write_record(self.spec.repo, self.model_dir, replace(self.record, pending=pending))

    def _restore_if_unchanged(self) -> bool:
        """The record as it was, where the server still serves what it did (True). Where the server cannot say (it
        stopped), the record keeps the step as pending for the next run to settle, and the error that brought us
        here is the one raised."""
        try:
            ready = _ready(self.triton, self.spec.name, self.spec.url)
        except TritongenError:
            return False
        if ready != self.ready:
            return False
        restore_record(self.spec.repo, self.model_dir, self.record, self.existed)
        return True


def _checked_model(spec: RolloutSpec) -> Path:
    from ..layout import check_not_model_folder
    from ..validate import check_repository
    from ..verify import check_verified

    model_dir = spec.repo / spec.name
    if not (model_dir / "config.pbtxt").is_file():
        check_not_model_folder(spec.repo)
        raise TritongenError(
            f"model repository {spec.repo} has no model '{spec.name}'", "pass the repository and a model folder in it"
        )
    if (spec.repo / f"{spec.name}{CANDIDATE_SUFFIX}").exists():
        raise TritongenError(
            f"the repository has a folder {spec.name}{CANDIDATE_SUFFIX}, the name rollout gives a candidate",
            "rename that model",
        )
    if spec.to_version is not None:
        _on_disk(spec, model_dir, spec.to_version)
    check_repository(spec.repo)  # Triton's rules, then every file's manifest (what `serve` checks)
    check_verified(spec.repo, allow_unverified=spec.allow_unverified)
    return model_dir


def _on_disk(spec: RolloutSpec, model_dir: Path, version: int) -> int:
    on_disk = version_numbers(model_dir)
    if version not in on_disk:
        raise TritongenError(
            f"model '{spec.name}' has no version {version} in {spec.repo} (versions: {', '.join(map(str, on_disk))})",
            "build it with tritongen build --new-version, or pass one of those versions",
        )
    return int(version)


def _ready(triton: Triton, name: str, url: str) -> list[int]:
    ready = triton.ready_versions(name)
    if not ready:
        raise TritongenError(
            f"the server at {url} has no version of '{name}' loaded",
            "serve the repository with explicit model control (tritongen serve REPO --model-control explicit) "
            "and pass its --url",
        )
    return ready


def _target(spec: RolloutSpec, record: RolloutRecord, model_dir: Path, live: int) -> int:
    target = spec.to_version
    if target is None:  # rollback without a version
        again = f"tritongen rollback {shlex.quote(str(spec.repo))} {shlex.quote(spec.name)} --to-version"
        if record.live is None:
            raise TritongenError(
                f"no rollout or rollback of '{spec.name}' is recorded, so there is nothing to roll back to",
                f"pass the version: {again} N",
            )
        if record.live != live:
            raise TritongenError(
                f"the server serves '{spec.name}' version {live}, but the rollout record says version {record.live} "
                f"is live ({record.last_change()}): a server restart loads config.pbtxt's versions (the newest by "
                "default), so a plain rollback has nothing recorded to return from",
                f"return to the recorded version with {again} {record.live} (or pass another version)",
            )
        if record.previous is None:
            raise TritongenError(
                f"the rollout record of '{spec.name}' has no version before {live}, so there is nothing to roll back",
                f"pass the version: {again} N",
            )
        last = record.last_promotion()
        if last is not None and last.get("action") == ROLLBACK and last.get("to") == live:
            # a second plain rollback re-promoted, past no gate, the version the first one had rolled back from
            refused = record.gate_refusal(record.previous) is not None  # a rollback to it would need --force
            alternative = "" if refused else f" (or {again} {record.previous})"
            raise TritongenError(
                f"'{spec.name}' version {live} already serves: the last change was a rollback to it "
                f"({record.last_change()}), and a plain rollback returns to the version before the last rollout",
                f"to serve version {record.previous} again, gate it: tritongen rollout {shlex.quote(str(spec.repo))} "
                f"{shlex.quote(spec.name)} --to-version {record.previous}{alternative}",
            )
        target = record.previous
    return _on_disk(spec, model_dir, target)


def _check_not_refused(spec: RolloutSpec, record: RolloutRecord, target: int) -> None:
    """A rollback skips the gate: refuse one to a version the gate refused (the record's history) unless forced.
    The version the record says is live is not refused: returning to it (after a restart served another) brings
    nothing new past the gate, whether or not a forced rollback made it live."""
    refusal = record.gate_refusal(target)
    if refusal is None or spec.force or target == record.live:
        return
    gate = refusal.get("gate")
    listed = gate.get("reasons") if isinstance(gate, dict) else None
    reasons = (  # the record's text, escaped and cut: anyone who may write the repository can edit it
        "; ".join(shown(r, MAX_REASON_CHARS) for r in listed[:MAX_EVENT_REASONS])
        if isinstance(listed, list) and listed
        else "see its comparison report"
    )
    raise TritongenError(
        f"the gate refused version {target} of '{spec.name}' (rollout {shown(refusal.get('from'), 12)} -> {target} "
        f"at {shown(refusal.get('at', '?'), 32)}: {reasons}), and a rollback skips the gate",
        f"gate it again with tritongen rollout {shlex.quote(str(spec.repo))} {shlex.quote(spec.name)} --to-version "
        f"{target}, or pass --force to serve it anyway",
    )


def _golden(spec: RolloutSpec, gate_model: str, target: int) -> GoldenSet:
    """The golden set, checked against the inputs the served model (or its ensemble) takes. Default: the new
    version's saved samples; through an ensemble, the sentences of its end-to-end reference (text ensembles)."""
    meta = model_metadata(spec.url, gate_model, spec.protocol, headers=spec.headers)
    batched = meta["max_batch_size"] > 0
    if spec.golden is None and gate_model != spec.name:
        versions = version_numbers(spec.repo / gate_model)
        reference = artifact_dir(spec.repo / gate_model, versions[-1] if versions else 1) / END_TO_END_NAME
        if not reference.is_file():
            raise TritongenError(
                f"ensemble '{gate_model}' (which calls '{spec.name}') has no end-to-end reference to judge with",
                "pass --golden: an .npz of the ensemble's inputs, or a text file with one text a line",
            )
        texts, _ = read_reference(reference)
        texts = texts[:MAX_GOLDEN_ROWS]  # the build's own sentences, repeated to its max batch size: its first rows
        return golden_from_texts(texts, None, meta["inputs"], batched, f"the end-to-end reference of '{gate_model}'")
    default = artifact_dir(spec.repo / spec.name, target) / SAMPLES_NAME
    if spec.golden is None and not default.is_file():
        raise TritongenError(f"'{spec.name}' has no saved samples ({default})", "pass --golden with inputs")
    golden = golden_from_file(spec.golden, default, meta["inputs"], batched)
    check_labels_within(golden, meta.get("outputs") or [])
    return golden


def _gate(
    triton: Triton,
    spec: RolloutSpec,
    config: Mapping[str, Any],
    files: Mapping[str, bytes],
    ensembles: list[str],
    golden: GoldenSet,
    live: int,
    target: int,
) -> GateReport:
    candidate = spec.name + CANDIDATE_SUFFIX
    try:  # the load inside: an interrupt as it returns still unloads the candidate
        triton.load(candidate, with_version_policy(config, [target], candidate), spec.timeout_s, files)
        live_t: Target = (spec.name, live)
        cand_t: Target = (candidate, target)
        if ensembles:  # end to end: the ensemble's steps as served, with the candidate (or the live version) as step
            steps = triton.model_config(ensembles[0])
            outputs = [t["name"] for t in steps.get("output", [])]

            def infer(t: Target, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return _through_steps(triton, steps, outputs, spec.name, t, inputs)
        else:

            def infer(t: Target, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return triton.infer(t[0], inputs, t[1])

        def stats(t: Target) -> tuple[int, int]:
            entry = triton.version_statistics(t[0]).get(int(t[1] or 0), {})
            return entry.get("success_count", 0), entry.get("success_ns", 0)

        report = run_gate(infer, stats, live_t, cand_t, golden, spec.thresholds, spec.name, (live, target))
        return replace(report, queue_delay_us=_queue_delay_us(config))
    finally:
        _quiet_unload(triton, [candidate])


def _queue_delay_us(config: Mapping[str, Any]) -> int:
    """How long the model's dynamic batcher may hold a request for a batch (its config answer; 0 without one, or
    for a model that does not batch or batches sequences)."""
    try:
        settings = served_settings_from_config(config)
    except ValueError:
        return 0
    if settings is None or not settings.max_batch_size:
        return 0
    return settings.max_queue_delay_us or 0


def _through_steps(
    triton: Triton,
    ensemble: Mapping[str, Any],
    outputs: list[str],
    step: str,
    target: Target,
    inputs: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """One request through an ensemble's steps, in order, as its scheduler would route the tensors, with
    ``target`` (model, version) answering for step ``step``. (Triton 2.51 polls an ensemble's steps from the
    repository, so an ensemble cannot call a candidate loaded from request content: the gate chains the steps.)"""
    tensors = dict(inputs)
    for entry in ensemble.get("ensemble_scheduling", {}).get("step", []):
        name, version = entry["model_name"], None
        if name == step:
            name, version = target
        feed = {key: tensors[value] for key, value in entry.get("input_map", {}).items()}
        answer = triton.infer(name, feed, version)
        for key, value in entry.get("output_map", {}).items():
            tensors[value] = answer[key]
    return {name: tensors[name] for name in outputs}


def _quiet_unload(triton: Triton, names: list[str]) -> None:
    for name in names:
        try:
            triton.unload(name)
        except TritongenError:
            pass


def _switch(
    triton: Triton,
    name: str,
    config: Mapping[str, Any],
    files: Mapping[str, bytes],
    live: int,
    target: int,
    timeout_s: float,
) -> None:
    """One load with ``specific [target]``: Triton loads the target (the live version serving meanwhile), then,
    under the lock every request's version lookup takes, releases the old version and marks the target READY.
    The target's files go with the request (:func:`_model_files`: the verified bytes, the ones the gate judged),
    so what Triton loads is what was checked, whatever happens to the repository meanwhile."""
    triton.load(name, with_version_policy(config, [target]), timeout_s, files)
    deadline = time.monotonic() + timeout_s
    while triton.ready_versions(name) != [target]:  # the old version drains, then unloads
        if time.monotonic() > deadline:
            raise TritongenError(f"'{name}' version {live} did not unload within {timeout_s:g} s", "see the server log")
        time.sleep(0.1)


def _resume(
    triton: Triton,
    spec: RolloutSpec,
    model_dir: Path,
    record: RolloutRecord,
    ready: list[int],
    say: Progress,
    signed: Mapping[str, str] | None,
) -> tuple[RolloutRecord, str]:
    pending = record.pending
    assert pending is not None
    if pending.step == GATE_STEP:
        _quiet_unload(triton, [spec.name + CANDIDATE_SUFFIX])
        done = f"undid the unfinished gate of version {pending.to_version} (version {ready[-1]} serves)"
        record = replace(record, pending=None).with_event(
            _event(pending.action, pending.from_version, pending.to_version, "gate undone", None)
        )
    elif pending.to_version not in ready and loading_version(triton, spec.name, pending.to_version):
        raise TritongenError(
            f"the server is still loading '{spec.name}' version {pending.to_version} for the unfinished "
            f"{pending.action} {pending.from_version} -> {pending.to_version}",
            "wait until it has loaded (the server log shows it), then run the command again",
        )
    elif pending.to_version not in ready or not set(ready) <= {pending.from_version, pending.to_version}:
        # The server moved on since, or never got the switch's load: act on nothing. A switch is finished only where
        # the server already holds its target, so a record written by hand cannot bring a version in past its gate
        # (the record is the repository's, outside the signature); a rollout to that version runs the gate again.
        done = (
            f"dropped the recorded unfinished {pending.action} {pending.from_version} -> {pending.to_version}: the "
            f"server serves {'version' if len(ready) == 1 else 'versions'} {', '.join(map(str, ready))}"
        )
        record = replace(record, pending=None).with_event(
            _event(pending.action, pending.from_version, pending.to_version, "stale step dropped", None)
        )
    else:
        say(f"finishing the interrupted switch of '{spec.name}' to version {pending.to_version}")
        config = triton.model_config(spec.name)
        version = _on_disk(spec, model_dir, pending.to_version)
        files = _model_files(model_dir, version, _digests(spec, model_dir), signed)
        _switch(triton, spec.name, config, files, pending.from_version, pending.to_version, spec.timeout_s)
        done = f"finished the interrupted {pending.action} to version {pending.to_version}"
        record = replace(record, live=pending.to_version, previous=pending.from_version, pending=None).with_event(
            _event(pending.action, pending.from_version, pending.to_version, "promoted (resumed)", None)
        )
    write_record(spec.repo, model_dir, record)
    say(done)
    return record, done


def loading_version(triton: Triton, name: str, version: int) -> bool:
    """Whether the server's repository index shows ``version`` of ``name`` as loading (a switch's load under way)."""
    return any(
        e["name"] == name and version_from_api(e["version"]) == version and e["state"] == "LOADING"
        for e in triton.repository_index()
    )


def _digests(spec: RolloutSpec, model_dir: Path) -> dict[str, str] | None:
    """The sha256 the manifests give each file of the model (what ``check_verified`` held them to); None for a
    model without a manifest that ``allow_unverified`` names."""
    from ..verify import manifest_digests

    digests = manifest_digests(model_dir)
    if digests is None and spec.name not in spec.allow_unverified:  # check_verified refused it: gone since
        raise TritongenError(
            f"model '{spec.name}' has no manifest (it was removed after verify)", "rebuild it with tritongen build"
        )
    return digests


def _signed(spec: RolloutSpec, signed: SignedFiles | None) -> dict[str, str] | None:
    """Where what is sent must be signed (the key of the server that ``serve --public-key`` started on this machine,
    else ``spec.public_key``: :meth:`LocalServer.signed_digests`): the sha256 the repository's signature gives each
    file of the model, by path in the model folder (the signature is proven that key's first). None: no signature
    to hold to."""
    if signed is None:
        return None
    prefix = f"{spec.name}/"
    return {path[len(prefix) :]: digest for path, digest in signed.digests.items() if path.startswith(prefix)}


def _signature_words(spec: RolloutSpec, server: LocalServer, signed: SignedFiles | None) -> str | None:
    """What the result says about signatures: what the files were held to; or, where the admin key was passed by
    hand and no server of this machine that checks signatures was found, that nothing was (a server elsewhere may
    check them: only --public-key brings its key here). Nothing otherwise."""
    if signed is not None:
        key = "the server's key" if signed.by_server_key else f"the key {spec.public_key}"
        return f"every file sent is the one the repository's signature lists under {key}"
    if spec.headers:
        return (
            f"not checked (no --public-key, and no server of this machine that checks signatures at {server.address}); "
            "pass --public-key to hold what is sent to the repository's signature"
        )
    return None


def _model_files(
    model_dir: Path, version: int, digests: Mapping[str, str] | None, signed: Mapping[str, str] | None = None
) -> dict[str, bytes]:
    """The files Triton reads for ``version`` of ``model_dir``, keyed by path in the folder: the version folder
    without tritongen's artifacts or bytecode caches, the warm-up data and the labels. With ``digests`` (path ->
    sha256, :func:`~tritongen.verify.manifest_digests`) each byte string read is hashed and must be the one its
    manifest lists, and every file the manifest lists in the version folder must be there: the bytes sent to
    Triton are the verified ones, though the repository changed after ``verify``. With ``signed`` (path in the
    folder -> sha256, from the repository's signature: :func:`_signed`) the same bytes must also be the signed
    ones, and every signed file of the version be there. At most :data:`MAX_LOAD_BYTES` in all (one load
    request)."""
    paths: list[Path] = []
    version_dir = model_dir / str(version)
    for path in sorted(version_dir.rglob("*")):
        rel = path.relative_to(version_dir)
        if rel.parts[0] == ARTIFACT_DIR or "__pycache__" in rel.parts or not path.is_file() or path.is_symlink():
            continue
        paths.append(path)
    for path in sorted((model_dir / WARMUP_DIR).glob("*")) + [model_dir / LABELS_FILENAME]:
        if path.is_file() and not path.is_symlink():
            paths.append(path)
    files: dict[str, bytes] = {}
    left = MAX_LOAD_BYTES
    for path in paths:
        rel_path = path.relative_to(model_dir).as_posix()
        shown = f"{model_dir.name}/{rel_path}"
        try:
            data = regular_bytes(path, left, follow_links=False)
        except FileTooLargeError:
            raise TritongenError(
                f"version {version} of model '{model_dir.name}' holds more than {MAX_LOAD_BYTES >> 20} MiB of files "
                f"(at {shown}), more than one load request can carry (gRPC and protobuf stop at 2 GiB)",
                "roll it out by restarting serve on the repository (or build it with smaller weight files)",
            ) from None
        except OSError as exc:
            raise TritongenError(
                f"{shown} {read_problem(exc)}",
                "check the file (and that nothing changes the repository during a rollout), then run it again",
            ) from None
        left -= len(data)
        sha256 = hashlib.sha256(data).hexdigest() if digests is not None or signed is not None else ""
        if signed is not None and signed.get(rel_path) != sha256:
            raise TritongenError(
                f"{shown} {'differs from' if rel_path in signed else 'is not in'} what the repository's signature "
                "lists: the version was built or changed after signing, and the server loads only signed files",
                f"check the change, sign the repository again (tritongen sign {model_dir.parent} --private-key KEY), "
                "then run this again",
            )
        if digests is not None:
            if rel_path not in digests:
                raise TritongenError(
                    f"{shown} is not listed in any manifest (it appeared after verify), and Triton would load it",
                    "remove it, or rebuild the model with tritongen build --force; then run the rollout again",
                )
            if sha256 != digests[rel_path]:
                raise TritongenError(
                    f"{shown} does not match its manifest (sha256 differs): it was changed or swapped after verify",
                    "restore the original file, or rebuild the model with tritongen build --force; then run the "
                    "rollout again",
                )
        files[rel_path] = data
    prefix = f"{version}/"
    for rel_path in sorted(digests or {}):
        parts = rel_path.split("/")
        if rel_path.startswith(prefix) and parts[1] != ARTIFACT_DIR and rel_path not in files:
            raise TritongenError(
                f"{model_dir.name}/{rel_path} is missing (removed after verify)",
                "restore it, or rebuild the model with tritongen build --force; then run the rollout again",
            )
    for rel_path in sorted(signed or {}):
        parts = rel_path.split("/")
        if rel_path.startswith(prefix) and parts[1] != ARTIFACT_DIR and rel_path not in files:
            raise TritongenError(
                f"{model_dir.name}/{rel_path} is signed but missing (removed after signing)",
                f"restore it, or sign the repository again (tritongen sign {model_dir.parent} --private-key KEY); then "
                "run this again",
            )
    return files


def _ensembles_using(triton: Triton, name: str) -> list[str]:
    """READY ensembles with a step ``name`` (the gate runs end to end through the first)."""
    out = []
    for entry in triton.repository_index():
        if entry["state"] != "READY" or entry["name"] in out or entry["name"].endswith(CANDIDATE_SUFFIX):
            continue
        config = triton.model_config(entry["name"])
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        if any(step.get("model_name") == name for step in steps):
            out.append(entry["name"])
    return sorted(out)


def _event(action: str, from_version: int, to_version: int, result: str, gate: GateReport | None) -> dict[str, Any]:
    event: dict[str, Any] = {"action": action, "from": from_version, "to": to_version, "result": result}
    if gate is not None:
        reasons = [r if len(r) <= MAX_REASON_CHARS else r[: MAX_REASON_CHARS - 3] + "..." for r in gate.reasons]
        if len(reasons) > MAX_EVENT_REASONS:  # one per output and check: a wide model's list outgrew the record
            more = len(reasons) - MAX_EVENT_REASONS + 1
            reasons = reasons[: MAX_EVENT_REASONS - 1] + [f"and {more} more (the comparison report lists them)"]
        event["gate"] = {
            "passed": gate.passed,
            "reasons": reasons,
            "latency_ratio": round(gate.latency_ratio, 3),
            "p99_ratio": round(gate.p99_ratio, 3),
        }
    return event


def _report_dir(spec: RolloutSpec, live: int, target: int) -> Path:
    """Where the gate's report goes (``--out``, else ``rollout_reports/`` in the current folder), checked before the
    gate runs: a folder that cannot be written failed after the whole gate, and one inside the repository made it
    a model folder that ``verify`` (so serve, deploy and the next rollout) refused."""
    from .bundle import repository_holding

    out = spec.out if spec.out is not None else unused_report_dir(Path("rollout_reports"), spec.name, live, target)
    out = Path(out).expanduser().absolute()
    place = repository_holding(out, spec.repo)
    if place is not None:
        raise TritongenError(
            f"the gate's report folder {shown(out, 120)} is inside the model repository {shown(place, 120)}, where "
            "Triton and verify would take it for a model",
            "pass --out with a folder beside the repository, or run the rollout from another folder",
        )
    if out.exists() and not out.is_dir():
        raise TritongenError(f"--out {shown(out, 120)} is a file", "pass a folder path (it is created)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TritongenError(
            f"the gate's report cannot be written into {shown(out, 120)} ({shown(existing, 120)} is not a folder "
            "you may write)",
            "pass --out with a folder you can write, or run the rollout from one",
        )
    return out


def unused_report_dir(root: Path, name: str, live: int, target: int) -> Path:
    """``root/<name>-v<live>-to-v<target>``, or with ``-2``, ``-3``, ... the first such folder that holds no gate
    report yet: a second gate of the same versions (a retry after a refusal) keeps the first one's report."""
    base = root / f"{name}-v{live}-to-v{target}"
    candidate, number = base, 1
    while (candidate / "comparison.json").exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate
