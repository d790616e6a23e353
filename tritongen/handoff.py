"""Hand-offs to the tools people already run: a perf_analyzer command line and a Model Analyzer ``config.yaml``
that reproduce ``tritongen perf``'s measurement of a built model.

``handoff/<model>/`` is written beside the model repository, never inside it, so Triton never loads it and
``tritongen verify`` never sees it (``handoff/<repository>-<model>/`` when ``handoff/<model>/`` holds the hand-off of
a model of the same name in another repository beside it):

- ``input_data.json``: perf_analyzer's ``--input-data``, the build's saved samples split into batch-1 requests
  (the requests ``tritongen perf`` sends), tensors base64-encoded;
- ``perf_analyzer.sh``: one perf_analyzer process per concurrency level, the command line tritongen's own
  ``--engine perf_analyzer`` runs (same windows, stability and trials), with ``--shape`` for every input (its
  dynamic dimensions at the samples' sizes). ``./perf_analyzer.sh [URL]`` (default ``127.0.0.1:8001``, gRPC)
  runs ``$PERF_ANALYZER`` when set, else ``perf_analyzer`` on ``PATH``, else (on the machine that wrote it) the
  binary tritongen's own engine runs, with the CUDA runtime folder tritongen puts on ``LD_LIBRARY_PATH``
  (:func:`tritongen.perf.perf_analyzer.find_perf_analyzer`); with none of them it prints one line saying what to
  install or set and exits 127;
- ``config.yaml``: ``model-analyzer profile -f config.yaml`` measures the model as built (no config search) at
  the same concurrencies with the same inputs, against a server already running (``triton_launch_mode:
  remote``, which needs explicit model control: ``tritonserver --model-control-mode=explicit --load-model='*'``).
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .client import DEFAULT_URLS
from .errors import TritongenError
from .files import regular_bytes, replace_file
from .perf.inputs import RequestSet, arrays_as_served, request_set_from_samples
from .perf.perf_analyzer import (
    PerfAnalyzerInstall,
    command_from_spec,
    cuda_runtime_dirs,
    find_perf_analyzer,
    input_data_from_requests,
)
from .perf.spec import PerfSpec

HANDOFF_DIR = "handoff"
DATA_NAME = "input_data.json"
SCRIPT_NAME = "perf_analyzer.sh"
MA_CONFIG_NAME = "config.yaml"
DEFAULT_GRPC_URL = DEFAULT_URLS["grpc"]  # as every other command: 127.0.0.1 (localhost may be ::1 first)
_URL = "${URL}"  # the script's one variable


@dataclass(frozen=True)
class Handoff:
    folder: Path
    input_data: Path
    script: Path
    model_analyzer_config: Path
    commands: tuple[tuple[str, ...], ...]  # one per level; the binary is "perf_analyzer", the URL ``${URL}``

    def command_for(self, binary: str, url: str) -> list[list[str]]:
        """The script's commands with ``binary`` and ``url`` filled in (run them from :attr:`folder`)."""
        return [[binary if i == 0 else url if a == _URL else a for i, a in enumerate(c)] for c in self.commands]


def handoff_dir_for(repo: Path) -> Path:
    """Where a build into ``repo`` writes its hand-offs: ``handoff/`` beside the repository (``handoff-files/``
    where the repository is itself named ``handoff``: hand-offs written into it failed its verify)."""
    repo = Path(repo).resolve()
    return repo.parent / (HANDOFF_DIR if repo.name != HANDOFF_DIR else f"{HANDOFF_DIR}-files")


def perf_analyzer_commands(spec: PerfSpec, requests: RequestSet) -> tuple[tuple[str, ...], ...]:
    """The command line of each load level, as tritongen's perf_analyzer engine runs it (relative file names)."""
    install = PerfAnalyzerInstall(binary=Path("perf_analyzer"), env={})
    commands = []
    levels = [("concurrency", float(c)) for c in spec.concurrency] + [("request_rate", r) for r in spec.request_rates]
    for mode, load in levels:
        tag = f"c{int(load)}" if mode == "concurrency" else f"r{load:g}"
        # --shape when every request has the same shapes; else perf_analyzer takes each one's from the data
        command = command_from_spec(install, spec, mode, load, Path(DATA_NAME), Path(f"results_{tag}.csv"), requests)
        command[command.index("-u") + 1] = _URL
        commands.append(tuple(command))
    return tuple(commands)


@dataclass(frozen=True)
class LocalPerfAnalyzer:
    """The perf_analyzer of the tritongen installation that writes a hand-off: the script's fallback on that machine
    (``binary``), run with the library folders tritongen's own engine puts on ``LD_LIBRARY_PATH``."""

    binary: Path
    library_path: tuple[str, ...] = ()


def local_perf_analyzer() -> LocalPerfAnalyzer | None:
    """The perf_analyzer tritongen's ``--engine perf_analyzer`` would run here, or None when there is none."""
    try:
        install = find_perf_analyzer()
    except TritongenError:
        return None
    return LocalPerfAnalyzer(binary=install.binary.absolute(), library_path=cuda_runtime_dirs())


def _script(model: str, commands: tuple[tuple[str, ...], ...], local: LocalPerfAnalyzer | None = None) -> str:
    fallback = shlex.quote(str(local.binary)) if local else "''"
    libraries = shlex.quote(os.pathsep.join(local.library_path)) if local else "''"
    lines = [
        "#!/usr/bin/env bash",
        f"# Reproduces `tritongen perf {model}` with perf_analyzer, written by tritongen: one process per load",
        "# level, the command line of `tritongen perf --engine perf_analyzer`. Usage: ./perf_analyzer.sh [URL]",
        "# perf_analyzer: $PERF_ANALYZER when set, else perf_analyzer on PATH, else the fallback below.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f'URL="${{1:-{DEFAULT_GRPC_URL}}}"',
        "# Fallback, valid only on the machine that wrote this script (skipped where the file is absent): the",
        "# perf_analyzer of the tritongen installation that wrote it, with the CUDA runtime folder (libcudart.so.12)",
        "# tritongen adds to LD_LIBRARY_PATH for it. Elsewhere: put perf_analyzer on PATH or set PERF_ANALYZER.",
        f"TRITONGEN_PERF_ANALYZER={fallback}",
        f"TRITONGEN_LIBRARY_PATH={libraries}",
        'if [ -n "${PERF_ANALYZER:-}" ]; then',
        '  if ! command -v -- "${PERF_ANALYZER}" >/dev/null 2>&1; then',
        '    echo "perf_analyzer.sh: PERF_ANALYZER=${PERF_ANALYZER} is neither an executable file nor a command on'
        " PATH: set it to perf_analyzer's binary, or unset it to use perf_analyzer on PATH\" >&2",
        "    exit 127",
        "  fi",
        "elif command -v perf_analyzer >/dev/null 2>&1; then",
        "  PERF_ANALYZER=perf_analyzer",
        'elif [ -n "${TRITONGEN_PERF_ANALYZER}" ] && [ -x "${TRITONGEN_PERF_ANALYZER}" ]; then',
        '  PERF_ANALYZER="${TRITONGEN_PERF_ANALYZER}"',
        "else",
        '  echo "perf_analyzer.sh: perf_analyzer is not on PATH${TRITONGEN_PERF_ANALYZER:+ nor at'
        " ${TRITONGEN_PERF_ANALYZER}}: install it (Triton's SDK; or tritongen's scripts/install_perf_analyzer.sh)"
        ' and put it on PATH, or set PERF_ANALYZER to its binary" >&2',
        "  exit 127",
        "fi",
        'if [ "${PERF_ANALYZER}" != perf_analyzer ] && [ -n "${TRITONGEN_LIBRARY_PATH}" ]; then',
        "  # not the one on PATH: the libraries tritongen runs its perf_analyzer with, after any already set",
        '  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH}:}${TRITONGEN_LIBRARY_PATH}"',
        "fi",
    ]
    for command in commands:
        args = ['"${PERF_ANALYZER}"'] + ['"${URL}"' if a == _URL else shlex.quote(a) for a in command[1:]]
        lines.append(" ".join(args))
    return "\n".join(lines) + "\n"


def _flag_value(command: tuple[str, ...], flag: str) -> str:
    return command[command.index(flag) + 1]


MAX_MA_CONFIG_BYTES = 1 << 20  # the config.yaml written here is a few KiB


def _written_for(folder: Path) -> str | None:
    """The repository an earlier hand-off in ``folder`` was written for (its config.yaml's model_repository), or
    None when there is none that can be read (a link is not followed)."""
    import yaml

    try:
        data = yaml.safe_load(regular_bytes(folder / MA_CONFIG_NAME, MAX_MA_CONFIG_BYTES, follow_links=False))
    except (OSError, ValueError, RecursionError, yaml.YAMLError):  # nesting deep enough to exhaust the parser
        return None
    value = data.get("model_repository") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def model_analyzer_config(
    repo: Path, model: str, spec: PerfSpec, requests: RequestSet, data_path: Path, cpu_only: bool
) -> dict[str, Any]:
    """Model Analyzer's ``profile`` config (its documented YAML keys) for the measurement of ``spec``."""
    command = perf_analyzer_commands(spec, requests)[0]
    shapes = [command[i + 1] for i, a in enumerate(command) if a == "--shape"]
    flags: dict[str, Any] = {
        "input-data": str(data_path),
        "measurement-interval": int(_flag_value(command, "--measurement-interval")),
        "stability-percentage": float(_flag_value(command, "--stability-percentage")),
        "max-trials": int(_flag_value(command, "--max-trials")),
    }
    if shapes:
        flags["shape"] = shapes
    parameters: dict[str, Any] = {"batch_sizes": [1]}
    if spec.concurrency:
        parameters["concurrency"] = [int(c) for c in spec.concurrency]
    else:
        parameters["request_rate"] = [int(r) for r in spec.request_rates]
    profile: dict[str, Any] = {"parameters": parameters, "perf_analyzer_flags": flags}
    if cpu_only:
        profile["cpu_only"] = True
    host = spec.resolved_url().rsplit(":", 1)[0]
    return {
        "model_repository": str(Path(repo).resolve()),
        "profile_models": {model: profile},
        "run_config_search_disable": True,
        "client_protocol": spec.protocol,
        "triton_launch_mode": "remote",
        "triton_grpc_endpoint": f"{host}:8001",
        "triton_http_endpoint": f"{host}:8000",
        "triton_metrics_url": f"http://{host}:8002/metrics",
    }


def handoff_from_model(repo: Path, model: str, out: Path, spec: PerfSpec | None = None) -> Handoff:
    """Write ``out/<model>/`` for the model ``model`` built in ``repo`` (its newest version's saved samples)."""
    import yaml

    from .validate import config_from_file

    repo = Path(repo).resolve()
    config = config_from_file(repo / model / "config.pbtxt")
    spec = spec or PerfSpec(model=model, url=DEFAULT_GRPC_URL, repo=repo)
    requests = request_set_from_samples(repo, model, config.max_batch_size > 0)
    if config.max_batch_size > 0:  # a scalar per item goes as [batch, 1], as the server takes it
        shapes = {i.name: [-1, *i.dims] for i in config.input}
        requests = replace(requests, requests=tuple(arrays_as_served(r, shapes) for r in requests.requests))
    if config.HasField("sequence_batching"):  # sequences as tritongen perf sends them (perf/run.py)
        from .perf.sequences import DEFAULT_SEQUENCE_LENGTH

        requests = replace(requests, sequence_length=spec.sequence_length or DEFAULT_SEQUENCE_LENGTH)
    folder = Path(out) / model
    owner = _written_for(folder)
    if owner is not None and owner != str(repo):  # another repository beside this one has a model of this name
        folder = Path(out) / f"{repo.name}-{model}"
    if any(p.is_symlink() for p in (Path(out), folder)):
        raise TritongenError(
            f"{folder} is reached through a symbolic link", "remove the link; hand-offs are written only to folders"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data_path = folder / DATA_NAME
        replace_file(data_path, json.dumps(input_data_from_requests(requests)))
        commands = perf_analyzer_commands(spec, requests)
        script = folder / SCRIPT_NAME
        replace_file(script, _script(model, commands, local_perf_analyzer()), mode=0o755)
        cpu_only = bool(config.instance_group) and all(g.kind == g.KIND_CPU for g in config.instance_group)
        ma = model_analyzer_config(repo, model, spec, requests, data_path.resolve(), cpu_only)
        ma_path = folder / MA_CONFIG_NAME
        header = (
            f"# Model Analyzer profile config written by tritongen: {model} as built (no config search), at the\n"
            "# concurrencies and with the inputs of `tritongen perf`, against a running server (remote mode, which\n"
            "# needs tritonserver --model-control-mode=explicit --load-model='*'). Run: model-analyzer profile -f "
            "config.yaml\n"
        )
        replace_file(ma_path, header + yaml.safe_dump(ma, sort_keys=False))
    except OSError as err:
        raise TritongenError(
            f"cannot write the hand-offs of {model} to {folder}: {err.strerror or err}",
            "make the folder beside the model repository writable",
        ) from None
    return Handoff(folder, data_path, script, ma_path, commands)
