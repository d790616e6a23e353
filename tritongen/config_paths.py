"""Settings of a ``config.pbtxt`` through which Triton reads files, or loads code, from paths the config names.

``verify`` checks every file in a model folder; a config that points Triton outside the folder would have it run
what nothing checked, and a signature covers the path, not the file (which can be swapped after signing). So a
path the config names must stay inside the model folder, where the manifest or the signature covers it, or the
setting is refused:

- ``parameters { key: "EXECUTION_ENV_PATH" }`` (Python backend): a packed environment whose ``bin/activate`` the
  stub sources before it imports ``model.py``. Accepted as ``$$TRITON_MODEL_DIRECTORY/<file>`` (the backend puts
  the model folder's path there), with no ``..``.
- ``default_model_filename`` and ``cc_model_filenames``: the model file (a Python backend's ``model.py``), joined
  to the version folder; an absolute path or ``..`` would load one from anywhere.
- ``sequence_batching { state { initial_state { data_file } } }``: read from ``<model>/initial_state/<data_file>``,
  so a path with ``..`` (or an absolute one) would give every sequence a starting state from anywhere.
- ``model_warmup { inputs { input_data_file } }``: read from ``<model>/warmup/<input_data_file>`` as a warm-up
  request's data; ``output { label_filename }``: read from the model folder as the output's class labels.
- ``model_operations { op_library_filename: ... }``: shared libraries a backend loads into the server.
- The ONNX Runtime backend's TensorRT accelerator: ``trt_extra_plugin_lib_paths`` (shared libraries),
  ``trt_engine_cache_enable``/``trt_engine_cache_path`` and ``trt_ep_context_file_path`` (engines it deserialises
  and runs, read from the server's working folder or the path named), ``trt_timing_cache_path``.

- ``backend``, ``runtime`` and repository agents' names: Triton looks each up as a folder or file under its
  backends (repository agents) folder, so a name with ``/`` or ``..`` loads a shared library (or a ``model.py``)
  from anywhere on the server's machine, which a signature cannot cover: a backend or agent name is letters,
  digits, ``_`` and ``-``; a runtime is a file name, no path.

tritongen writes none of these; a hand-written model that needs them is served from an image that holds them.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from .names import shell_special_chars

MODEL_DIRECTORY_VARIABLE = "$$TRITON_MODEL_DIRECTORY"
EXECUTION_ENV_KEY = "EXECUTION_ENV_PATH"
_ORT_TENSORRT_FILE_KEYS = (
    "trt_extra_plugin_lib_paths",
    "trt_engine_cache_path",
    "trt_ep_context_file_path",
    "trt_timing_cache_path",
)
FIX = (
    "keep every file the model needs inside its folder (a Python environment as "
    f"{MODEL_DIRECTORY_VARIABLE}/<file>), or build a serving image that holds it and remove the setting"
)


def inside_model_folder(value: str) -> bool:
    """True for ``$$TRITON_MODEL_DIRECTORY/<relative path without ..>``."""
    prefix = MODEL_DIRECTORY_VARIABLE + "/"
    if not value.startswith(prefix):
        return False
    rest = PurePosixPath(value[len(prefix) :])
    if shell_special_chars(value[len(prefix) :]):  # the stub sources the environment through a shell
        return False
    return bool(rest.parts) and not rest.is_absolute() and ".." not in rest.parts and "\\" not in value


def inside_version_folder(filename: str) -> bool:
    """True for a relative path without ``..`` (nor backslashes): what Triton joins to a version folder to find the
    model file (``default_model_filename``, ``cc_model_filenames``) stays in that folder."""
    path = PurePosixPath(filename)
    return (
        bool(path.parts)
        and not path.is_absolute()
        and ".." not in path.parts
        and "\\" not in filename
        and "\x00" not in filename  # no file has that name: C code ends the path there
    )


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")
# parameter names that name files (a word of the name: OpenVINO's CPU_EXTENSION_PATH, a library it loads;
# TensorRT-LLM's gpt_model_path and tokenizer_dir); not "profile" nor "calibration_mode"
_PATH_WORDS = frozenset({"path", "paths", "dir", "directory", "file", "filename", "lib", "library", "folder"})
# Triton's own install in the serving image (TensorRT-LLM's stock executor_worker_path): the image's, not a file
# a repository brings
_IMAGE_PREFIX = "/opt/tritonserver/"


def _names_a_file(key: str) -> bool:
    return any(word in _PATH_WORDS for word in re.split(r"[_\-.\s]+", key.lower()))


def _leads_out(value: str) -> bool:
    """Whether a parameter's value is a path that leaves the model's folder: absolute (but for Triton's own
    install), from home, a drive, or through ``..`` (relative to the server's working folder, which is no model's);
    a ``$$TRITON_MODEL_DIRECTORY/`` path that stays inside does not."""
    text = value.strip()
    if text.startswith(MODEL_DIRECTORY_VARIABLE + "/"):
        rest = PurePosixPath(text[len(MODEL_DIRECTORY_VARIABLE) + 1 :].replace("\\", "/"))
        return rest.is_absolute() or ".." in rest.parts
    if text.startswith(_IMAGE_PREFIX) and ".." not in PurePosixPath(text).parts:
        return False
    parts = PurePosixPath(text.replace("\\", "/")).parts
    return text.startswith(("/", "~")) or ".." in parts or re.match(r"[A-Za-z]:[\\/]", text) is not None


def outside_path_problems(config: Any, name: str) -> list[str]:
    """What in ``config`` (a parsed ``ModelConfig``) points Triton at files outside model ``name``'s folder."""
    problems = []
    if config.backend and not _PLAIN_NAME.fullmatch(config.backend):
        problems.append(
            f"model '{name}' names backend '{config.backend[:200]}': Triton looks a backend up as a folder of its "
            "backends folder, and this name leads elsewhere (a shared library loaded into the server unchecked)"
        )
    if config.runtime and ("/" in config.runtime or "\\" in config.runtime or ".." in config.runtime):
        problems.append(
            f"model '{name}' names runtime '{config.runtime[:200]}', a path: Triton loads the runtime from its "
            "backend's folder, and a path leads elsewhere (loaded into the server unchecked)"
        )
    for agent in config.model_repository_agents.agents:
        if not _PLAIN_NAME.fullmatch(agent.name):
            problems.append(
                f"model '{name}' names repository agent '{agent.name[:200]}': Triton looks an agent up as a folder "
                "of its repoagents folder, and this name leads elsewhere (a shared library loaded unchecked)"
            )
    for key, parameter in sorted(config.parameters.items()):  # a backend's own settings naming files elsewhere
        value = parameter.string_value
        if key != EXECUTION_ENV_KEY and _names_a_file(key) and _leads_out(value):
            problems.append(
                f"model '{name}' sets parameter {key[:100]} to '{value[:200]}', a path out of its folder: the "
                f"{config.backend or config.platform or 'model'} backend would read it (code or weights) unchecked"
            )
    env = config.parameters.get(EXECUTION_ENV_KEY)
    if env is not None and not inside_model_folder(env.string_value):
        problems.append(
            f"model '{name}' names a Python environment outside its folder ({EXECUTION_ENV_KEY} "
            f"'{env.string_value[:200]}'), which the stub unpacks and runs unchecked"
        )
    files = [("default_model_filename", config.default_model_filename)]
    files += [(f"cc_model_filenames '{cc[:40]}'", f) for cc, f in sorted(config.cc_model_filenames.items())]
    for field, filename in files:
        if filename and not inside_version_folder(filename):
            problems.append(
                f"model '{name}' sets {field} '{filename[:200]}', a path out of its version folders: the backend "
                "would load that file, unchecked, instead of the version's own"
            )
    for state in config.sequence_batching.state:
        for initial in state.initial_state:
            data_file = initial.data_file if initial.WhichOneof("state_data") == "data_file" else ""
            if data_file and not inside_version_folder(data_file):
                problems.append(
                    f"model '{name}' reads the initial state of '{state.input_name[:100]}' from data_file "
                    f"'{data_file[:200]}', a path out of its initial_state folder: Triton would read that file, "
                    "unchecked, as every sequence's starting state"
                )
    for warmup in config.model_warmup:
        for input_name, data in sorted(warmup.inputs.items()):
            data_file = data.input_data_file if data.WhichOneof("input_data_type") == "input_data_file" else ""
            if data_file and not inside_version_folder(data_file):
                problems.append(
                    f"model '{name}' warms '{input_name[:100]}' up with input_data_file '{data_file[:200]}', a path "
                    "out of its warmup folder: Triton would read that file, unchecked, into a request to the model"
                )
    for output in config.output:
        if output.label_filename and not inside_version_folder(output.label_filename):
            problems.append(
                f"model '{name}' reads the labels of output '{output.name[:100]}' from '{output.label_filename[:200]}'"
                ", a path out of its folder: Triton would read that file, unchecked, into its answers"
            )
    for library in config.model_operations.op_library_filename:
        problems.append(f"model '{name}' loads operation library '{library[:200]}' into the server unchecked")
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        settings = accelerator.parameters
        for key in _ORT_TENSORRT_FILE_KEYS:
            if key in settings:
                problems.append(
                    f"model '{name}' sets {key} '{settings[key][:200]}': TensorRT would read it from outside "
                    "the model folder unchecked"
                )
        if settings.get("trt_engine_cache_enable", "").strip().lower() in ("1", "true"):
            problems.append(
                f"model '{name}' enables trt_engine_cache_enable: TensorRT would load cached engines from the "
                "server's working folder unchecked"
            )
    return problems
