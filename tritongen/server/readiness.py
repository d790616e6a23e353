"""Waiting until every model is READY (through :class:`tritongen.client.Triton`), and turning a failed
load or an early exit into one clean error quoting the server's log."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any  # the server: a process.RunningServer (which imports this module)

from ..errors import TritongenError
from ..names import one_line
from .spec import DEFAULT_PORTS, POLL_INTERVAL_S


class PortRace(Exception):
    """Another process took a port between choosing it and tritonserver binding it: start again."""


def wait_ready(server: Any, deadline: float) -> tuple[str, ...]:
    """Poll the repository index until every model is READY; raise with the server's reasons otherwise."""
    from ..client import Triton

    with Triton(server.http_url, "http", timeout_s=5, headers=server.admin_headers("http")) as triton:
        return _poll_ready(server, triton, deadline)


def _poll_ready(server: Any, triton, deadline: float) -> tuple[str, ...]:
    while True:
        code = server.process.poll()
        if code is not None:
            _raise_exited(server, code)
        index = _repository_index(triton)
        if index is not None and _ports_of_another_process(server):
            # Another tritonserver holds one of our ports and answered: its index says nothing about ours, which
            # fails to bind and exits (a PortRace above, and a start on other ports), or the deadline says so.
            index = None
        if index is None:
            _raise_stub_failed(server)
        if index is not None:
            states: dict[str, list[dict[str, str]]] = {}
            for entry in index:
                states.setdefault(entry.get("name", "?"), []).append(entry)
            if not states:
                raise TritongenError(
                    f"the model repository {server.spec.repo} has no models",
                    "build a model into it first (tritongen build)",
                )
            pending = [n for n, es in states.items() if any(e.get("state") in ("LOADING", "UNLOADING") for e in es)]
            if not pending:
                failed = {n: es for n, es in states.items() if not any(e.get("state") == "READY" for e in es)}
                if failed:
                    _raise_failed(server, failed)
                return tuple(sorted(states))
        if time.monotonic() > deadline:
            taken = _ports_of_another_process(server)
            if taken:
                raise TritongenError(
                    f"another process answers on port {', '.join(map(str, taken))}, which this tritonserver was given",
                    "stop the other server, or pass free ports with --http-port/--grpc-port/--metrics-port",
                )
            raise TritongenError(
                f"tritonserver did not get all models ready within {server.spec.ready_timeout_s:g} s",
                f"raise serve's --timeout-s (ready_timeout_s in the Python API), or see the server log "
                f"{server.log_path}",
                details=server.log_tail(),
            )
        time.sleep(POLL_INTERVAL_S)


def _ports_of_another_process(server: Any) -> list[int]:
    """The server's ports that another process listens on (none where /proc cannot tell; a port nobody listens on
    yet is not one: a server still starting, or one whose models hang, has not bound it)."""
    from .ports import listened_on, listens_on

    return [port for port in server.ports.values() if listens_on(server.pid, port) is False and listened_on(port)]


def _repository_index(triton) -> list[dict] | None:
    """The repository index, or None while the server does not answer yet."""
    try:
        return triton.repository_index()
    except TritongenError:
        return None


def _raise_failed(server: Any, failed: Mapping[str, list[dict]]) -> None:
    reasons = {}
    log_reasons = log_load_errors(server.log_path)
    for name, entries in failed.items():
        reason = next((e.get("reason") for e in entries if e.get("reason")), "") or log_reasons.get(name, "")
        state = entries[0].get("state") or "not loaded"
        reasons[name] = reason or state
    names = ", ".join(f"'{n}'" for n in reasons)
    first_name, first_reason = next(iter(reasons.items()))
    first_line = first_reason.strip().splitlines()[0] if first_reason.strip() else "no reason given"
    details = "\n\n".join(f"{name}: {reason.strip()}" for name, reason in reasons.items())
    # The caller stops the server (and keeps the log the error names) once this poll's connection is closed:
    # stopped from in here, Triton would wait out its exit timeout for that open connection, then be killed.
    missing = re.search(r"unable to find backend library for backend '([^']+)'", details)
    fix = (
        f"this tritonserver has no '{missing.group(1)}' backend (the one from PyPI has the Python backend only): "
        f"{_local_fix(server.spec.repo, list(reasons))} to serve it here, or serve it in NGC's container (tritongen "
        f"serve --docker, tritongen deploy); full server log: {server.log_path}"
        if missing
        else f"fix the model and run again; full server log: {server.log_path}"
    )
    raise TritongenError(
        f"model {names} failed to load in tritonserver ({first_name}: {first_line})"
        if len(reasons) == 1
        else f"models {names} failed to load in tritonserver ({first_name}: {first_line})",
        fix,
        details=details,
    )


def _local_fix(repo: Path, names: list[str]) -> str:
    """How to get a Python-backend model for the named ones: build again with --target local; for a model tritongen
    did not write (no manifest), from its ONNX file where it has one (an empty config.pbtxt names no backend:
    Triton completes it from model.onnx as onnxruntime)."""
    from ..layout import has_manifest, version_of_folder

    for name in names:
        model_dir = repo / name
        if has_manifest(model_dir):
            continue
        onnx = [p for p in model_dir.glob("*/model.onnx") if version_of_folder(p.parent.name) is not None]
        if onnx:
            source = max(onnx, key=lambda p: int(p.parent.name))  # the version Triton serves by default
            return (
                f"build it from its ONNX file (tritongen build {shlex.quote(str(source))} --name {name} --target "
                f"local --repo {shlex.quote(str(repo))} --force)"
            )
        return f"model '{name}' was not built by tritongen: give it a Python-backend model.py"
    return "build with --target local"


def _raise_exited(server: Any, code: int) -> None:
    tail = server.log_tail()
    errors = log_errors(server.log_path)
    if any(
        re.search(r"address already in use|already in use|failed to start (http|grpc|metrics)", e, re.IGNORECASE)
        for e in errors
    ):
        if all(getattr(server.spec, f"{k}_port") is None for k in DEFAULT_PORTS):
            raise PortRace()
    load_errors = log_load_errors(server.log_path)
    if load_errors:
        name, reason = next(iter(load_errors.items()))
        problem = f"model '{name}' failed to load and tritonserver exited ({reason.strip().splitlines()[0]})"
    elif errors:
        problem = f"tritonserver exited with code {code} before its models were ready ({errors[-1]})"
    else:
        problem = f"tritonserver exited with code {code} before its models were ready"
    details = "\n".join(errors + ["", f"last lines of {server.log_path}:", tail]) if errors else tail
    raise TritongenError(problem, f"see the server log below, or all of it in {server.log_path}", details=details)


LOG_CRASH_LINES = 400  # how far back from the log's end a crash's own line is looked for (a stack trace follows it)
_ERROR_LINE_RE = re.compile(
    r"^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"\"?(?P<msg>.*?)\"?$|^(?P<plain>(error|.*unrecognized option|.*invalid argument).*)$",
    re.IGNORECASE | re.MULTILINE,
)


def log_errors(log_path: Path, limit: int = 10) -> list[str]:
    """The server's own error lines (``E1122 ...]`` or ``error: ...``), without the harmless NVML/DCGM noise."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    found = []
    for m in _ERROR_LINE_RE.finditer(text):
        line = (m["msg"] or m["plain"] or "").strip()
        if line and not re.search(r"NVML|DCGM|CudaDriverHelper", line):
            found.append(line.replace("\\n", " ")[:500])
    return found[-limit:]


# A Python-backend model whose stub cannot start (its model.py missing from the version served): the backend says so
# and tritonserver then waits, not answering, until the ready timeout (Triton 2.51).
_STUB_FAILED_RE = re.compile(r"Failed to preinitialize Python stub: (?P<reason>.*?)\"?$", re.MULTILINE)
_MODEL_PATH_RE = re.compile(r"/(?P<model>[^/']+)/(?P<version>\d+)/model\.py")
_STUB_LOG_TAIL_BYTES = 256 << 10  # read each poll: the log's last 256 KiB


def _raise_stub_failed(server: Any) -> None:
    """Raise at once where the log says a Python-backend stub failed to start (see ``_STUB_FAILED_RE``)."""
    try:
        with open(server.log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - _STUB_LOG_TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except OSError:
        return
    failed = _STUB_FAILED_RE.search(text)
    if failed is None:
        return
    # the model from the path in the reason (.../NAME/VERSION/model.py): models load in parallel, so the last
    # "loading:" line before it may be another's
    at = _MODEL_PATH_RE.search(failed["reason"])
    which = f"model {one_line(at['model'])}:{at['version']}" if at else "a Python-backend model"
    raise TritongenError(
        f"{which} failed to start in tritonserver ({one_line(failed['reason'].strip())[:300]}), and the server "
        "waits on it",
        f"run tritongen verify {server.spec.repo} (every version folder the model serves needs its files), or see "
        f"the server log {server.log_path}",
        details=server.log_tail(),
    )


_LOAD_ERROR_RE = re.compile(r"failed to load '(?P<name>[^']+)' version \d+: (?P<reason>.*?)\"?$", re.MULTILINE)


def log_load_errors(log_path: Path) -> dict[str, str]:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return {}
    return {m["name"]: m["reason"].replace("\\n", "\n") for m in _LOAD_ERROR_RE.finditer(text)}


_CRASH_LINE_RE = re.compile(
    r"^(?P<line>(terminate called .*|Signal \(\d+\) received.*|.*Segmentation fault.*|.*core dumped.*))$", re.MULTILINE
)


def crash_words(returncode: int | None, log_path: Path) -> str:
    """How a server that is gone ended, for a person: its exit (a signal by name) and its log's own last word on it
    (``terminate called after throwing an instance of ...``, ``Signal (6) received``), read from the log's tail;
    empty while it runs."""
    import signal

    if returncode is None:
        return ""
    if returncode < 0:
        try:
            how = f"killed by signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    lines = [m["line"].strip() for m in _CRASH_LINE_RE.finditer(tail_of(log_path, LOG_CRASH_LINES))]
    said = next((line for line in reversed(lines) if line.startswith("terminate called")), lines[-1] if lines else "")
    if not said and returncode != 0:
        errors = log_errors(log_path, limit=1)
        said = errors[-1] if errors else ""
    return how + (f"; its log: {said[:300]}" if said else "")


def tail_of(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


_OPEN_CONNECTIONS_RE = re.compile(r"Timeout (\d+): Found (\d+) HTTP service connections")


def stop_words(returncode: int | None, log_path: Path) -> str:
    """How a server that was asked to stop ended, for a person. Triton 2.51 first waits for every open HTTP
    connection to close (a client that keeps its keep-alive connection idle holds it), counting down its exit
    timeout (30 s), and then, the timeout spent, exits at once without unloading its models (code 1, "Exit
    timeout expired. Exiting immediately."): said so, with what held it, rather than "unloaded its models"."""
    tail = tail_of(log_path, 400)
    if returncode == 0 or "Exit timeout expired" not in tail:
        return f"tritonserver unloaded its models and exited (code {returncode})"
    waits = [(int(t), int(n)) for t, n in _OPEN_CONNECTIONS_RE.findall(tail)]
    if not waits:
        return f"tritonserver's exit timeout expired before its models unloaded; it exited at once (code {returncode})"
    most = max(n for _, n in waits)
    seconds = max(t for t, _ in waits)  # Triton counts down from its exit timeout, one line a second
    return (
        f"tritonserver waited {seconds} s for {most} open HTTP connection{'s' if most > 1 else ''} to close (a "
        "client keeping its connection open), then exited at once without unloading its models "
        f"(code {returncode}); close clients before stopping the server"
    )
