"""Offline validation of Triton model configurations and repositories, with Triton's own rules.

The rules and most messages come from Triton's core (``model_config_utils.cc``: ``ValidateModelConfig``,
``ValidateModelIOConfig``, ``ValidateInstanceGroup``; the warmup and version-loading code; the ONNX Runtime
backend's accelerator options); ensemble rules live in :mod:`tritongen.validate_ensemble`. Where Triton
would auto-complete a field (version policy, instance groups, the backend from the model file), the
validator does the same before judging, so a config Triton accepts is accepted here.

Public API:

- :func:`config_from_text` parses ``config.pbtxt`` text into the protobuf (syntax errors name file:line:col).
- :func:`problems_in_config` lists every problem of one model (its folder too when ``model_dir`` is given).
- :func:`validate_repository` checks every model of a repository, ensembles across models included.
- :func:`check_repository` does the same and raises :class:`TritongenError` when anything is wrong.

Only the GPUs of the target host cannot be known offline: GPU ids are checked against ``gpu_count`` when it
is given, else against :data:`MAX_GPUS_PER_HOST`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_paths import inside_version_folder
from .errors import TritongenError
from .layout import (
    ARTIFACT_DIR,
    CONFIG_NAME,
    ENGINE_PLAN_NAME,
    NON_VERSION_FOLDERS,
    TOP_LEVEL_FIX,
    WARMUP_DIR,
    check_not_model_folder,
    config_text,
    link_problems,
    misread_version_folders,
    misread_version_problem,
    top_level_problems,
    triton_version,
    version_numbers,
)
from .names import one_line, shell_special_chars, shown
from .scheduling import MAX_INSTANCE_COUNT
from .sequence import STATES_PARAMETER
from .validate_ensemble import (
    ENSEMBLE_PLATFORM,
    WILDCARD_DIM,
    problems_in_ensemble_scheduling,
    problems_in_ensembles,
)
from .validate_onnx import (
    GraphIO,
    GraphTensor,
    config_pb2,
    graph_io_from_onnx,
    onnx_available,
    onnx_io_problems,
    shape_text,
    tensor_names,
)
from .validate_sequence import graph_state_problems, runner_state_pairs, state_problems

ModelConfig = Any  # tritonclient.grpc.model_config_pb2.ModelConfig (imported inside functions)

MAX_GPUS_PER_HOST = 16  # the largest NVIDIA servers (DGX-2/HGX-2) hold 16 GPUs


# Backend names Triton's core knows, each with the platform it implies (GetBackendType/FromPlatform).
_PLATFORM_OF_BACKEND = {
    "tensorflow": ("tensorflow_graphdef", "tensorflow_savedmodel"),
    "tensorrt": ("tensorrt_plan",),
    "onnxruntime": ("onnxruntime_onnx",),
    "pytorch": ("pytorch_libtorch",),
}
_PLATFORM_HINTS = {
    "onnxruntime": 'use backend: "onnxruntime" (or platform: "onnxruntime_onnx")',
    "onnx": 'use backend: "onnxruntime" (or platform: "onnxruntime_onnx")',
    "tensorrt": 'use backend: "tensorrt" (or platform: "tensorrt_plan")',
    "pytorch": 'use backend: "pytorch" (or platform: "pytorch_libtorch")',
    "python": 'use backend: "python"; the Python backend has no platform',
}
_BYTES_PER_ELEMENT = {
    "TYPE_BOOL": 1,
    "TYPE_UINT8": 1,
    "TYPE_INT8": 1,
    "TYPE_UINT16": 2,
    "TYPE_INT16": 2,
    "TYPE_FP16": 2,
    "TYPE_BF16": 2,
    "TYPE_UINT32": 4,
    "TYPE_INT32": 4,
    "TYPE_FP32": 4,
    "TYPE_UINT64": 8,
    "TYPE_INT64": 8,
    "TYPE_FP64": 8,
}
# Keys the ONNX Runtime backend accepts for its TensorRT accelerator; any other key fails the model load.
_ORT_TENSORRT_KEYS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)
_ORT_PRECISION_MODES = frozenset({"FP32", "FP16", "BF16", "INT8"})


def config_from_text(text: str, source: str = CONFIG_NAME) -> ModelConfig:
    """Parse ``config.pbtxt`` text; a syntax error raises :class:`TritongenError` naming file, line and column."""
    from google.protobuf import text_format

    try:
        config = text_format.Parse(text, config_pb2().ModelConfig())
    except text_format.ParseError as err:
        raise _syntax_error(err, source) from None
    except ValueError as err:  # a number out of its field's range (an enum of 2**31): no ParseError
        raise TritongenError(
            f"{source}: invalid model configuration: {str(err)[:200]}",
            "fix the value there (an enum by its name, a number within its field's range)",
        ) from None
    unknown = _unknown_enum(config)
    if unknown:
        problem, names = unknown
        raise TritongenError(
            f"{source}: invalid model configuration: {problem}",
            f"give the enum by one of its names ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})",
        )
    return config


def _unknown_enum(message: Any, where: str = "") -> tuple[str, list[str]] | None:
    """The first enum field of ``message`` (nested messages and maps included) holding a number its enum does not
    name (and that enum's names, its default left out): the text format takes ``data_type: 99``, and reading its
    name raises ValueError."""
    for fd, value in message.ListFields():
        path = f"{where}.{fd.name}" if where else fd.name
        repeated = getattr(fd, "is_repeated", None)  # protobuf 6; label (deprecated there) before it
        if not (fd.label == fd.LABEL_REPEATED if repeated is None else repeated):
            items = [value]
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            items = list(value.values())
        else:
            items = list(value)
        for item in items:
            if fd.enum_type is not None and item not in fd.enum_type.values_by_number:
                names = [v.name for v in fd.enum_type.values if v.number != 0] or [fd.enum_type.values[0].name]
                return f"{path} is {item}, which names no {fd.enum_type.name} value", names
            if hasattr(item, "ListFields"):
                found = _unknown_enum(item, path)
                if found:
                    return found
    return None


def _syntax_error(err: Any, source: str) -> TritongenError:
    reason = str(err).split(" : ", 1)[-1]
    where = f"{source}:{err.GetLine()}:{err.GetColumn()}" if err.GetLine() else source
    fix = "fix the syntax there (protobuf text format: `field: value`, lists as `[ a, b ]`, enums bare)"
    if 'oneof "scheduling_choice"' in reason:
        fix = (
            "keep one scheduler: dynamic_batching, sequence_batching or ensemble_scheduling "
            "(an ensemble batches in its composing models)"
        )
    elif "has no field named" in reason:
        fix = "check the field's spelling and nesting against Triton's model_config.proto"
    return TritongenError(f"{where}: invalid model configuration: {reason}", fix)


def config_from_file(path: Path) -> ModelConfig:
    """Read (:func:`tritongen.layout.config_text`: a regular file of at most
    :data:`~tritongen.layout.MAX_CONFIG_BYTES`, one open) and parse one ``config.pbtxt``; a file that cannot be
    read raises :class:`TritongenError`."""
    return config_from_text(config_text(path), source=str(path))


# --------------------------------------------------------------------------------------------------------
# One model


@dataclass(frozen=True)
class _Backend:
    """Platform, backend and model file after Triton's server-side auto-completion."""

    platform: str
    backend: str
    filename: str
    known: bool = True  # False when the backend would be inferred from files we were not shown


def _version_dir_contents(model_dir: Path | None) -> dict[str, bool] | None:
    """Names in the first version folder (what Triton inspects) mapped to is-directory; None if there is none."""
    if model_dir is None or not model_dir.is_dir():
        return None
    subdirs = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    if not subdirs:
        return None
    return {p.name: p.is_dir() for p in (model_dir / subdirs[0]).iterdir()}


def completed_backend_name(config: ModelConfig, model_dir: Path) -> str | None:
    """The backend Triton runs the model of ``model_dir`` on, its config completed as Triton completes it
    (``backend: 'python'`` in any quoting, or no backend and a ``model.py``); None where none can be found."""
    done = _completed_backend(config, model_dir, model_dir.name)
    return None if isinstance(done, str) else done.backend


def _completed_backend(config: ModelConfig, model_dir: Path | None, model_name: str) -> _Backend | str:
    """Triton's ``AutoCompleteBackendFields``; returns an error message when no backend can be found."""
    platform, backend, filename = config.platform, config.backend, config.default_model_filename
    files = _version_dir_contents(model_dir)
    guess = not platform and not filename and files is not None  # may Triton look at the files?
    if not platform and backend in ("", "tensorflow"):
        if filename in ("model.savedmodel", "model.graphdef"):
            platform = "tensorflow_savedmodel" if filename == "model.savedmodel" else "tensorflow_graphdef"
        elif guess and files is not None and files.get("model.graphdef") is False:
            platform = "tensorflow_graphdef"
        elif guess and files is not None and files.get("model.savedmodel") is True:
            platform = "tensorflow_savedmodel"
    if platform in ("tensorflow_savedmodel", "tensorflow_graphdef"):
        default = "model.savedmodel" if platform == "tensorflow_savedmodel" else "model.graphdef"
        return _Backend(platform, backend or "tensorflow", filename or default)
    # (backend, its platform or "", its model file, the file's kind: True dir, False file, None either)
    for name, its_platform, its_file, is_dir in (
        ("tensorrt", "tensorrt_plan", "model.plan", False),
        ("onnxruntime", "onnxruntime_onnx", "model.onnx", None),
        ("openvino", "", "model.xml", None),
        ("pytorch", "pytorch_libtorch", "model.pt", False),
        ("python", "", "model.py", None),
    ):
        if not backend:
            if (its_platform and platform == its_platform) or filename == its_file:
                backend = name
            elif guess and files is not None and its_file in files and is_dir in (None, files[its_file]):
                backend = name
        if backend == name:
            return _Backend(platform or its_platform, backend, filename or its_file)
    if not backend and not platform and not filename:
        if "." in model_name:
            suffix = model_name.split(".", 1)[1]
            return _Backend("", suffix, f"model.{suffix}")
        if model_dir is None:
            return _Backend("", "", "", known=False)
        return (
            f"Invalid model name: Could not determine backend for model '{model_name}' with no backend in model "
            "configuration. Expected model name of the form 'model.<backend_name>'. Set backend (onnxruntime, "
            "python, tensorrt, pytorch, ...) in config.pbtxt or put the model file in a version folder"
        )
    return _Backend(platform, backend, filename)


def _platform_problems(name: str, done: _Backend) -> list[str]:
    """Platform/backend pairing (``ValidateModelConfig``), judged on the auto-completed fields."""
    if not done.known:
        return []
    if not done.backend:
        if done.platform == ENSEMBLE_PLATFORM:
            return []
        hint = _PLATFORM_HINTS.get(
            done.platform, "set backend (onnxruntime, python, tensorrt, pytorch, ...) or a platform Triton knows"
        )
        return [f"unexpected platform type '{done.platform}' for {name}: {hint}"]
    if done.platform == ENSEMBLE_PLATFORM:
        return [f"Ensemble model '{name}' must have platform type 'ensemble' and empty backend type"]
    platforms = _PLATFORM_OF_BACKEND.get(done.backend)
    if platforms is not None and done.platform not in platforms:
        return [
            f"unexpected 'platform' and 'backend' pair, got:{done.platform}, {done.backend} for {name}: "
            f"backend '{done.backend}' goes with platform '{platforms[0]}' or none"
        ]
    return []


def _element_count(dims) -> int:
    """Triton's ``GetElementCount``: -1 if any dimension is variable, 0 for no dimensions."""
    if any(d == WILDCARD_DIM for d in dims):
        return -1
    count = 0
    for i, d in enumerate(dims):
        count = d if i == 0 else count * d
    return count


def _chunk_counts(dims) -> list[int]:
    """Element counts of the pieces between variable dimensions: [2, 4, -1, 6] -> [8, 6]."""
    counts, current = [], 1
    for d in dims:
        if d == WILDCARD_DIM:
            counts.append(current)
            current = 1
        else:
            current *= d
    return counts + [current]


def _io_problem(io, max_batch_size: int, kind: str, platform: str) -> str | None:
    """First problem of one input or output (``ValidateIOShape`` + ``ValidateModelInput/Output``)."""
    if not io.name:
        return f"model {kind} must specify 'name'"
    named = f"model {kind} '{io.name}' "
    if io.data_type == 0:
        return named + "must specify 'data_type'"
    if not io.dims:
        return named + "must specify 'dims'"
    has_reshape = io.HasField("reshape")
    if has_reshape and not io.reshape.shape and max_batch_size == 0:
        return named + "cannot have empty reshape for non-batching model as scalar tensors are not supported"
    if any(d < 1 and d != WILDCARD_DIM for d in io.dims):
        return named + "dimension must be integer >= 1, or -1 to indicate a variable-size dimension"
    if has_reshape:
        if any(d < 1 and d != WILDCARD_DIM for d in io.reshape.shape):
            return named + "reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension"
        dims_size, reshape_size = _element_count(io.dims), _element_count(io.reshape.shape)
        if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
            return named + "has different size for dims and reshape"
        if dims_size == -1:
            dims_chunks, reshape_chunks = _chunk_counts(io.dims), _chunk_counts(io.reshape.shape)
            if len(dims_chunks) != len(reshape_chunks):
                return named + "has different number of variable-size dimensions for dims and reshape"
            if dims_chunks != reshape_chunks:
                return named + "has different size for dims and reshape"
    if kind == "input" and io.format in (1, 2) and len(io.dims) != 3:  # FORMAT_NHWC, FORMAT_NCHW
        return f"model input NHWC/NCHW require 3 dims ('{io.name}' has {len(io.dims)})"
    if io.is_shape_tensor and platform != "tensorrt_plan":
        return f"shape tensors are only supported for TensorRT platform ('{io.name}')"
    if io.is_non_linear_format_io:
        if platform != "tensorrt_plan":
            return f"Non-linear IO format is only supported for the TensorRT platform ('{io.name}')"
        if len(io.dims) != 3:
            return f"Non-linear IO format {kind} requires 3 dims ('{io.name}')"
    return None


def _io_problems(config: ModelConfig, name: str, platform: str) -> list[str]:
    problems = []
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for io in tensors:
            problem = _io_problem(io, config.max_batch_size, kind, platform)
            if problem:
                problems.append(f"{problem} for {name}")
            elif io.name in seen:
                problems.append(f"model {kind} '{io.name}' is declared more than once for {name}")
            seen.add(io.name)
    return problems + [f"{p} for {name}" for p in _batch_io_problems(config)]


def _batch_io_problems(config: ModelConfig) -> list[str]:
    """``ValidateBatchIO``: source counts, data types and names of batch inputs and outputs."""
    mc = config_pb2()
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    problems = []
    for batch_input in config.batch_input:
        kind = mc.BatchInput.Kind.Name(batch_input.kind)
        unknown = [s for s in batch_input.source_input if s not in inputs]
        if len(batch_input.source_input) != 1:
            problems.append(f"batch input kind '{kind}' expects 1 source input, got {len(batch_input.source_input)}")
        elif batch_input.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
            problems.append("batch input data type must be TYPE_INT32 or TYPE_FP32")
        elif unknown:
            problems.append(f"unknown source input name '{unknown[0]}'")
    for batch_output in config.batch_output:
        kind = mc.BatchOutput.Kind.Name(batch_output.kind)
        unknown = [s for s in batch_output.source_input if s not in inputs]
        targets = list(batch_output.target_name)
        if len(batch_output.source_input) != 1:
            problems.append(f"batch output kind '{kind}' expects 1 source input, got {len(batch_output.source_input)}")
        elif unknown:
            problems.append(f"unknown source input name '{unknown[0]}'")
        elif any(t not in outputs for t in targets):
            problems.append(f"unknown target output name '{next(t for t in targets if t not in outputs)}'")
        elif len(set(targets)) != len(targets):
            twice = next(t for t in targets if targets.count(t) > 1)
            problems.append(f"target output name '{twice}' can only be specified once")
    return problems


def _dynamic_batching_problems(config: ModelConfig, name: str) -> list[str]:
    if not config.HasField("dynamic_batching"):
        return []
    batching = config.dynamic_batching
    problems = []
    for size in batching.preferred_batch_size:
        if size <= 0:
            problems.append(f"dynamic batching preferred size must be positive for {name}")
            break
        if size > config.max_batch_size:
            problems.append(
                f"dynamic batching preferred size must be <= max batch size for {name} "
                f"({size} > {config.max_batch_size})"
            )
            break
    levels = batching.priority_levels
    if levels != 0:
        if batching.default_priority_level == 0 or batching.default_priority_level > levels:
            problems.append(f"default priority level must be in range [1, {levels}] for {name}")
        if any(level == 0 or level > levels for level in batching.priority_queue_policy):
            problems.append(f"priority queue policy must have priority level in range [1, {levels}] for {name}")
    if batching.preserve_ordering:
        if levels > 1:
            problems.append(f"Only one priority level is allowed when 'preserve_ordering' is true for {name}")
        policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
        if any(
            p.default_timeout_microseconds != 0 and p.timeout_action == config_pb2().ModelQueuePolicy.DELAY
            for p in policies
        ):
            problems.append(
                f"Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {name}"
            )
    return problems


def _sequence_batching_problems(config: ModelConfig, name: str) -> list[str]:
    """Control tensors (``GetBooleanSequenceControlProperties`` and friends) and strategy options."""
    if not config.HasField("sequence_batching"):
        return []
    mc = config_pb2()
    batcher = config.sequence_batching
    problems = []
    if config.response_cache.enable:
        problems.append(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. "
            "Please disable the response cache."
        )
    seen: set[str] = set()
    for control_input in batcher.control_input:
        if not control_input.name:
            problems.append(f"sequence batching control tensor must have a name for {name}")
        elif control_input.name in seen:
            problems.append(
                f"sequence batching control tensor '{control_input.name}' is specified for multiple "
                f"control kinds for {name}"
            )
        seen.add(control_input.name)
    controls = [(ci.name, c) for ci in batcher.control_input for c in ci.control]
    Kind = mc.ModelSequenceBatching.Control
    for kind in (
        Kind.CONTROL_SEQUENCE_START,
        Kind.CONTROL_SEQUENCE_END,
        Kind.CONTROL_SEQUENCE_READY,
        Kind.CONTROL_SEQUENCE_CORRID,
    ):
        kind_name = mc.ModelSequenceBatching.Control.Kind.Name(kind)
        mine = [c for _, c in controls if c.kind == kind]
        if len(mine) > 1:
            problems.append(f"sequence batching specifies multiple {kind_name} tensors for {name}")
        for c in mine[:1]:
            given = [f for f in ("int32_false_true", "fp32_false_true", "bool_false_true") if len(getattr(c, f))]
            if kind == Kind.CONTROL_SEQUENCE_CORRID:
                if given:
                    problems.append(
                        "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' "
                        f"or 'bool_false_true' for {kind_name} for {name}"
                    )
                elif c.data_type not in (mc.TYPE_UINT64, mc.TYPE_INT64, mc.TYPE_UINT32, mc.TYPE_INT32, mc.TYPE_STRING):
                    problems.append(
                        f"unexpected data type for control {kind_name} for {name}. Allowed data types are "
                        "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
                    )
            elif not given:
                problems.append(
                    "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
                    f"'bool_false_true' for {kind_name} for {name}"
                )
            elif len(given) > 1:
                problems.append(
                    "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' "
                    f"and 'bool_false_true' for {kind_name} for {name}"
                )
            elif len(getattr(c, given[0])) != 2:
                problems.append(
                    f"sequence batching control '{given[0]}' must have exactly 2 entries for {kind_name} for {name}"
                )
    if batcher.HasField("oldest"):
        for size in batcher.oldest.preferred_batch_size:
            if size <= 0 or size > config.max_batch_size:
                bound = "be positive" if size <= 0 else "be <= max batch size"
                problems.append(f"sequence batching preferred batch size must {bound} for {name}")
                break
    if batcher.HasField("direct") and not 0.0 <= batcher.direct.minimum_slot_utilization <= 1.0:
        problems.append(f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}")
    return problems


def _instance_group_problems(config: ModelConfig, name: str, platform: str, gpu_count: int | None) -> list[str]:
    """``ValidateInstanceGroup`` after ``NormalizeInstanceGroup`` (missing groups, counts and kinds get defaults)."""
    mc = config_pb2()
    Group = mc.ModelInstanceGroup
    limit = MAX_GPUS_PER_HOST if gpu_count is None else gpu_count
    problems = []
    for index, group in enumerate(config.instance_group):
        label = f"instance group {group.name or f'{name}_{index}'} of model {name}"
        if group.count > MAX_INSTANCE_COUNT:
            problems.append(
                f"{label} asks for {group.count} instances, each a thread with its own memory (a process for the "
                f"Python backend): give a count of at most {MAX_INSTANCE_COUNT}"
            )
        if group.kind in (Group.KIND_CPU, Group.KIND_MODEL) and group.gpus:
            problems.append(f"{label} has kind {Group.Kind.Name(group.kind)} but specifies one or more GPUs")
        if group.kind == Group.KIND_GPU and gpu_count == 0:
            problems.append(f"{label} has kind KIND_GPU but no GPUs are available")
        elif group.kind in (Group.KIND_GPU, Group.KIND_AUTO):
            for gpu in group.gpus:
                if not 0 <= gpu < limit:
                    known = (
                        ", ".join(str(g) for g in range(limit))
                        if gpu_count is not None
                        else f"ids 0 to {limit - 1} at most (no host has more than {limit} GPUs)"
                    )
                    problems.append(
                        f"{label} specifies invalid or unsupported gpu id {gpu}. GPUs with at least the "
                        f"minimum required CUDA compute compatibility are: {known}"
                    )
        if group.kind == Group.KIND_CPU and platform == "tensorrt_plan":
            problems.append(f"{label} has kind KIND_CPU but TensorRT models run only on GPUs: use KIND_GPU")
        if group.profile and platform != "tensorrt_plan":
            problems.append(
                f"{label} and platform {platform or '(none)'} specifies profile field which is only "
                "supported for TensorRT models"
            )
        for profile in group.profile:
            if not profile.strip().isdigit():
                problems.append(
                    f"{label} and platform {platform} specifies invalid profile {profile}. The field "
                    "should contain the string representation of a non-negative integer."
                )
    return problems + _rate_limiter_problems(config)


def _rate_limiter_problems(config: ModelConfig) -> list[str]:
    """The rate limiter's resources (``RateLimiter::ResourceManager::ValidateMaxResources``, run as each instance
    registers): one name may not be both global and per device. Resource counts the server is given
    (``--rate-limit-resource``) are only known where it starts."""
    scopes: dict[str, set[bool]] = {}
    for group in config.instance_group:
        for resource in group.rate_limiter.resources:
            scopes.setdefault(resource.name, set()).add(getattr(resource, "global"))
    return [
        f'Resource "{name}" is present as both global and device-specific resource in the model configuration.'
        for name, seen in scopes.items()
        if len(seen) > 1
    ]


def _warmup_problems(config: ModelConfig, name: str, model_dir: Path | None) -> list[str]:
    """Warmup samples as Triton builds them (``GenerateWarmupData`` and the request checks they go through)."""
    mc = config_pb2()
    inputs = {t.name: t for t in config.input}
    controls = {ci.name for ci in config.sequence_batching.control_input}
    problems = []
    for sample in config.model_warmup:
        if sample.batch_size == 0:
            continue  # Triton skips batch-0 samples
        where = f"warmup sample '{sample.name}' of model '{name}'"
        allowed = max(config.max_batch_size, 1)  # a model without batching takes a sample of batch 1 only
        if sample.batch_size > allowed:
            problems.append(
                f"failed to run warmup sample '{sample.name}': batch size {sample.batch_size} for '{name}', max "
                f"allowed is {config.max_batch_size}"
                + ("" if config.max_batch_size else " (without batching a sample is one request: batch 1)")
                + f": set the sample's batch_size to at most {allowed}"
            )
        for key in sorted(sample.inputs):
            value = sample.inputs[key]
            if WILDCARD_DIM in value.dims:
                problems.append(
                    f"warmup setting expects all variable-size dimensions are specified for input '{key}' ({where})"
                )
                continue
            source = value.WhichOneof("input_data_type")
            if source is None:
                problems.append(f"warmup setting expects input '{key}' to have input_data_type set ({where})")
            io = inputs.get(key)
            if io is None and key not in controls:
                problems.append(f"unexpected inference input '{key}' for model '{name}' ({where})")
            elif io is not None and value.data_type != io.data_type:
                problems.append(
                    f"inference input '{key}' data-type is '{mc.DataType.Name(value.data_type)}', but model "
                    f"'{name}' expects '{mc.DataType.Name(io.data_type)}' ({where})"
                )
            elif io is not None and not _dims_compatible(value.dims, io.dims):
                problems.append(
                    f"unexpected shape for input '{key}' for model '{name}'. Expected {list(io.dims)}, got "
                    f"{list(value.dims)} ({where})"
                )
            if source == "input_data_file" and model_dir is not None:
                problems += _warmup_file_problems(model_dir, key, value, where)
        missing = [t.name for t in config.input if not t.optional and t.name not in sample.inputs]
        if missing:
            problems.append(
                f"{where} does not set input(s) {', '.join(repr(m) for m in missing)}: every required "
                "input needs a value"
            )
    return problems


def _resolved(folder: Path, name: str) -> Path | None:
    """``folder / name`` resolved; None for a name no file can have (a NUL character) or a path through a loop."""
    if "\x00" in name:
        return None
    try:
        return (folder / name).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _dims_compatible(given, expected) -> bool:
    return len(given) == len(expected) and all(e == WILDCARD_DIM or g == e for g, e in zip(given, expected))


def _warmup_file_problems(model_dir: Path, key: str, value, where: str) -> list[str]:
    folder = (model_dir / WARMUP_DIR).resolve()
    path = _resolved(folder, value.input_data_file)
    if path is None:
        return [f"warmup data file '{shown(value.input_data_file)}' for input '{key}' is no file name ({where})"]
    if folder not in path.parents:
        return [f"warmup data file '{value.input_data_file}' for input '{key}' is outside {folder} ({where})"]
    if not path.is_file():
        return [f"unable to find warmup data file '{WARMUP_DIR}/{value.input_data_file}' for input '{key}' ({where})"]
    type_name = config_pb2().DataType.Name(value.data_type)
    expected_bytes = _element_count(value.dims) * _BYTES_PER_ELEMENT.get(type_name, 4)
    size_bytes = path.stat().st_size
    if type_name != "TYPE_STRING" and expected_bytes > size_bytes:
        return [
            f"warmup setting expects {expected_bytes} bytes, but the data provided from "
            f"{value.input_data_file} only has {size_bytes} bytes ({where})"
        ]
    return []


def _onnxruntime_problems(config: ModelConfig, name: str) -> list[str]:
    """Accelerator names and options the ONNX Runtime backend rejects when it loads the model."""
    accelerators = config.optimization.execution_accelerators
    problems = []
    for accelerator in accelerators.gpu_execution_accelerator:
        if accelerator.name not in ("tensorrt", "cuda"):
            problems.append(
                f"unknown Execution Accelerator '{accelerator.name}' is requested for {name}: "
                "gpu_execution_accelerator takes 'tensorrt' or 'cuda'"
            )
        if accelerator.name != "tensorrt":
            continue
        for key in sorted(accelerator.parameters):
            if key not in _ORT_TENSORRT_KEYS:
                problems.append(f"unknown parameter '{key}' is provided for TensorRT Execution Accelerator of {name}")
        mode = accelerator.parameters.get("precision_mode")
        if mode is not None and mode not in _ORT_PRECISION_MODES:
            problems.append(
                f"unsupported precision mode '{mode}' is requested for {name}: use FP32, FP16, BF16 or INT8"
            )
    for accelerator in accelerators.cpu_execution_accelerator:
        if accelerator.name != "openvino":
            problems.append(
                f"unknown Execution Accelerator '{accelerator.name}' is requested for {name}: "
                "cpu_execution_accelerator takes 'openvino'"
            )
    return problems


def _other_problems(config: ModelConfig, name: str) -> list[str]:
    problems = []
    if config.platform == ENSEMBLE_PLATFORM and not config.HasField("ensemble_scheduling"):
        problems.append(f"ensemble scheduling must be set for ensemble {name} whose platform is ensemble")
        for scheduler in ("dynamic_batching", "sequence_batching"):
            if config.HasField(scheduler):
                problems.append(
                    f"{scheduler} should not be specified for ensemble '{name}': set it on its composing models"
                )
    if config.model_transaction_policy.decoupled and config.response_cache.enable:
        problems.append(
            f"Response Cache does not currently support model {name} with 'decoupled' transaction "
            "policy. Please disable the response cache."
        )
    for control in config.model_metrics.metric_control:
        if not control.HasField("metric_identifier"):
            problems.append(f"metric control must specify 'metric_identifier' for {name}")
        elif not control.metric_identifier.family:
            problems.append(f"metric identifier must specify non-empty 'family' for {name}")
        elif not control.HasField("histogram_options"):
            problems.append(f"metric control must specify 'histogram_options' for {name}")
        elif not control.histogram_options.buckets:
            problems.append(f"histogram options must specify non-empty 'buckets' for {name}")
    return problems


def problems_in_config(
    config: ModelConfig, model_dir: Path | None = None, *, gpu_count: int | None = None
) -> list[str]:
    """Every problem Triton would refuse this model for, as messages naming the model and tensor.

    With ``model_dir`` (the model's folder) the folder is checked too: name, version folders, model files,
    label and warmup files, and the backend Triton would infer from the files. ``gpu_count`` is the number of
    GPUs on the target host, when known. Cross-model ensemble rules need the whole repository: see
    :func:`validate_repository`.
    """
    model_dir = Path(model_dir) if model_dir is not None else None
    name = config.name or (model_dir.name if model_dir is not None else "<unnamed>")
    done = _completed_backend(config, model_dir, model_dir.name if model_dir is not None else name)
    if isinstance(done, str):
        problems, done = [done], _Backend(config.platform, config.backend, config.default_model_filename, False)
    else:
        problems = _platform_problems(name, done)
    if config.max_batch_size < 0:
        problems.append(f"'max_batch_size' must be non-negative value for {name}")
    problems += _io_problems(config, name, done.platform)
    problems += _dynamic_batching_problems(config, name)
    problems += _sequence_batching_problems(config, name)
    problems += state_problems(config, name, done.backend)
    if config.HasField("ensemble_scheduling"):
        problems += problems_in_ensemble_scheduling(config, name)
    problems += _other_problems(config, name)
    if not config.HasField("ensemble_scheduling") and config.platform != ENSEMBLE_PLATFORM:
        problems += _instance_group_problems(config, name, done.platform, gpu_count)
        problems += _warmup_problems(config, name, model_dir)
    if done.backend == "onnxruntime":
        problems += _onnxruntime_problems(config, name)
    stub = done.backend not in NATIVE_BACKENDS or config.runtime.endswith(".py")  # pytorch runtime: "model.py"
    if stub and config.platform != ENSEMBLE_PLATFORM:  # python or Python-based: a stub started through a shell
        problems += _stub_path_problems(config, name)
    if model_dir is not None:
        problems += _folder_problems(config, name, model_dir, done)
    return problems


# backends Triton runs in its own process, without a stub: any other (python, or a Python-based one such as vllm,
# whose folder holds a model.py; or pytorch with runtime: "model.py", its PyTorch 2 form) starts a stub process per
# instance through a shell
NATIVE_BACKENDS = frozenset(
    {
        "onnxruntime",
        "tensorrt",
        "pytorch",
        "tensorflow",
        "openvino",
        "fil",
        "dali",
        "identity",
        "repeat",
        "square",
        "tensorrtllm",
    }
)


def _stub_path_problems(config: ModelConfig, name: str) -> list[str]:
    """A Python-backend model whose name, model file name or instance group names (the stub's instance is
    ``<group>_<n>``) a shell would split or run: a group named ``g$(id>/tmp/x)`` ran the command in the server."""
    problems = []
    texts = [("name", name), ("model file name", config.default_model_filename)]
    texts += [("instance group name", group.name) for group in config.instance_group]
    for what, text in texts:
        bad = shell_special_chars(text)
        if bad:
            problems.append(
                f"the {what} {text[:200]!r} of Python-backend model '{name}' holds {', '.join(map(repr, bad))}: "
                "Triton starts the model's stub through a shell that splits or runs them; rename it with letters, "
                "digits, '_', '-' and '.'"
            )
    return problems


# --------------------------------------------------------------------------------------------------------
# The model's folder


HIDDEN_FOLDER_FIX = "remove it or move it out of the repository"


def hidden_folder_problem(name: str) -> str:
    """Why a folder of a model repository whose name starts with a dot is refused (validate and verify)."""
    name = name if name.isprintable() else ascii(name)[1:-1]
    return (
        f"folder '{name}' has a hidden name, which tritongen refuses, yet Triton loads it as a model "
        "(and tritongen would not check it)"
    )


def versions_to_load(config: ModelConfig, existing: list[int]) -> tuple[list[int], list[int]]:
    """Triton's ``VersionsToLoad``: (versions loaded, specific versions asked for but absent)."""
    policy = config.version_policy
    if policy.HasField("specific"):
        wanted = list(policy.specific.versions)
        return [v for v in wanted if v in existing], [v for v in wanted if v not in existing]
    if policy.HasField("all"):
        return list(existing), []
    count = policy.latest.num_versions if policy.HasField("latest") else 1
    return sorted(existing, reverse=True)[:count], []


def _folder_problems(config: ModelConfig, name: str, model_dir: Path, done: _Backend) -> list[str]:
    if not model_dir.is_dir():
        return [f"model folder {model_dir} of model '{name}' does not exist"]
    problems = []
    if config.name and config.name != model_dir.name:
        problems.append(
            f"unexpected directory name '{model_dir.name}' for model '{config.name}', directory name must "
            "equal model name: rename the folder or the config's name"
        )
    for sub in sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name not in NON_VERSION_FOLDERS):
        if triton_version(sub) is not None:
            continue  # a version folder, or one Triton reads as another's number (named below)
        if len(sub) > 1 and sub.startswith("0"):
            use = f" (use '{int(sub)}')" if sub.isascii() and sub.isdigit() else ""
            problems.append(
                f"version folder '{sub}' of model '{name}' is ignored by Triton: it contains leading zeros "
                f"in its directory name{use}"
            )
        else:
            problems.append(
                f"version folder '{sub}' of model '{name}' is ignored by Triton: it fails to convert to "
                "integral number (version folders are named 1, 2, ...)"
            )
    problems += [": ".join(misread_version_problem(name, *misread)) for misread in misread_version_folders(model_dir)]
    loaded, absent = versions_to_load(config, version_numbers(model_dir))
    for version in absent:
        problems.append(f"version {version} is specified for model '{name}', but the version directory is not present")
    if not loaded:
        problems.append(
            f"at least one version must be available under the version policy of model '{name}': "
            f"create {model_dir.name}/1/" + ("" if done.platform == ENSEMBLE_PLATFORM else " holding the model file")
        )
    problems += _model_file_problems(config, name, model_dir, loaded, done)
    problems += graph_state_problems(config, name, model_dir, loaded)
    if done.backend == "onnxruntime":
        problems += _graph_io_problems(config, name, model_dir, loaded, done.filename)
        for filename in sorted(set(config.cc_model_filenames.values())):  # what a GPU of that capability loads
            if filename != done.filename and inside_version_folder(filename):
                problems += _graph_io_problems(config, name, model_dir, loaded, filename, io=False)
    elif done.backend == "python":
        problems += _runner_io_problems(config, name, model_dir, loaded)
    for io in config.output:
        if io.label_filename:
            path = _resolved(model_dir, io.label_filename)
            if path is None:
                problems.append(
                    f"label file '{shown(io.label_filename)}' for output '{io.name}' in model '{name}' is no file name"
                )
            elif model_dir.resolve() not in path.parents:
                problems.append(
                    f"label file path '{path}' for output '{io.name}' in model '{name}' is outside model directory"
                )
            elif not path.is_file():
                problems.append(
                    f"unable to find label file '{io.label_filename}' for output '{io.name}' in model '{name}'"
                )
    return problems


_GraphCheck = Callable[[ModelConfig, str, GraphIO, str], list[str]]  # (config, name, graph, where) -> problems


def _version_graph_problems(
    config: ModelConfig,
    name: str,
    model_dir: Path,
    versions: list[int],
    filename: str,
    check_for: Callable[[Path], _GraphCheck | None],
    unreadable: tuple[str, str],
) -> list[str]:
    """Each loaded version's graph ``filename`` judged by the check ``check_for`` gives for its version folder (a
    folder it gives none for, or without the file, is skipped: the model-file checks name a missing one); a graph
    that cannot be read is named with ``unreadable``: (what is wrong with it, the fix). None without onnx."""
    if not onnx_available():
        return []
    problems = []
    for version in versions:
        folder = model_dir / str(version)
        path = folder / filename
        check = check_for(folder) if path.exists() else None
        if check is None:
            continue
        where = f"{version}/{filename}"
        try:
            graph = graph_io_from_onnx(path)
        except ValueError as exc:
            problems.append(f"{where} of model '{name}' {unreadable[0]} ({exc}): {unreadable[1]}")
            continue
        problems += [
            f"{where} of model '{name}' reads weights from '{one_line(location[:200])}', a path out of its version "
            "folder: ONNX Runtime would load that file unchecked (no manifest or signature covers it): keep the "
            "external data beside the model file (onnx.save_model(..., location='model.onnx.data'))"
            for location in graph.external_locations
            if not inside_version_folder(location)
        ]
        problems += check(config, name, graph, where)
    return problems


def _graph_io_problems(
    config: ModelConfig, name: str, model_dir: Path, versions: list[int], filename: str, io: bool = True
) -> list[str]:
    """The ONNX Runtime backend's checks of the config against each loaded version's graph (none without onnx);
    ``io=False``: the graph's own problems only (unreadable, external data out of its folder), for the graphs
    ``cc_model_filenames`` names, which a GPU of that capability loads."""
    return _version_graph_problems(
        config,
        name,
        model_dir,
        versions,
        filename,
        lambda folder: onnx_io_problems if io else lambda config, name, graph, where: [],
        ("is not a model the ONNX Runtime backend can load", "export it again or rebuild with tritongen"),
    )


RUNNER_TEMPLATE = "python/onnx_runner.py"  # the model.py a --target local build writes: it runs model.onnx
SEQUENCE_RUNNER_TEMPLATE = "python/sequence_runner.py"  # the same for a stateful model (--state): keeps its state


def _runner_io_problems(config: ModelConfig, name: str, model_dir: Path, versions: list[int]) -> list[str]:
    """For a Python-backend model whose model.py is one of tritongen's ONNX Runtime runners, unchanged: the runner
    feeds the config's inputs to ``model.onnx`` by name and asks ONNX Runtime for the config's outputs by name, so a
    name the graph lacks, a graph input the config lacks, or an input data type the graph does not take fails every
    request (ONNX Runtime: "Invalid output name", "Missing Input", ...), though Triton loads the model. The runner
    feeds each request's tensors as Triton shaped them by the config (the batch dim first where max_batch_size > 0)
    and returns what ONNX Runtime computes, so an input's dims the graph does not take fail every request too ("Got
    invalid dimensions"), and an output's dims other than the graph's contradict every response (see
    :func:`_runner_dims_problem`).

    The sequence runner also feeds the graph the state inputs of the config's ``tritongen_states`` pairs (from the
    state it keeps) and asks for their outputs: those need no config tensor, and :func:`graph_state_problems`
    judges them against the graph."""
    from .templates import template_path

    def check_for(folder: Path) -> _GraphCheck | None:
        from .files import regular_bytes

        runners = {
            template_path(RUNNER_TEMPLATE).read_bytes(): _runner_graph_problems,
            template_path(SEQUENCE_RUNNER_TEMPLATE).read_bytes(): _sequence_runner_graph_problems,
        }
        try:  # a model.py longer than the runners is neither: no more than that is read
            code = regular_bytes(folder / "model.py", max(map(len, runners)))
        except OSError:
            return None  # missing or unreadable (named by the model-file checks), or larger than a runner
        return runners.get(code) if (folder / "model.onnx").is_file() else None

    return _version_graph_problems(
        config,
        name,
        model_dir,
        versions,
        "model.onnx",
        check_for,
        ("cannot be read", "rebuild it with tritongen build"),
    )


def _sequence_runner_graph_problems(config: ModelConfig, name: str, graph: GraphIO, where: str) -> list[str]:
    """:func:`_runner_graph_problems` for the sequence runner: the graph inputs of its state pairs are its own."""
    if STATES_PARAMETER not in config.parameters:  # its state inputs are unknown: the runner fails to load
        return [
            f"{where.partition('/')[0]}/model.py of model '{name}' is tritongen's sequence runner, which reads its "
            f"state pairs from the config's {STATES_PARAMETER} parameter, but config.pbtxt lacks it, so Triton "
            "cannot load the model: rebuild it with tritongen build"
        ]
    state_inputs = frozenset(state_in for state_in, _ in runner_state_pairs(config))
    if not state_inputs <= set(graph.inputs):
        # the runner fails to load, named by the state checks (graph_state_problems); which graph inputs its pairs
        # should name is unknown, so none is asked of the config
        state_inputs |= frozenset(graph.inputs)
    return _runner_graph_problems(config, name, graph, where, state_inputs)


def _runner_graph_problems(
    config: ModelConfig, name: str, graph: GraphIO, where: str, state_inputs: frozenset[str] = frozenset()
) -> list[str]:
    """What tritongen's ONNX Runtime runner (``model.py``) would fail on every request: see
    :func:`_runner_io_problems`. ``state_inputs``: the graph inputs the sequence runner feeds from its state (a
    config input of that name is overwritten by the state, so it is not fed either)."""

    type_name = config_pb2().DataType.Name
    problems = []
    feedable = {**graph.inputs, **graph.overridable}
    for io in config.input:
        if io.name in state_inputs:
            continue
        tensor = feedable.get(io.name)
        if tensor is None:
            problems.append(
                f"input '{io.name}' of model '{name}' is not an input of {where} (its inputs: "
                f"{tensor_names(graph.inputs) or 'none'}): model.py feeds ONNX Runtime the config's inputs by name, so "
                "every request would fail: rename it in config.pbtxt"
            )
            continue
        if tensor.type_name and tensor.type_name != type_name(io.data_type):
            problems.append(
                f"input '{io.name}' of model '{name}' is {type_name(io.data_type)} in config.pbtxt but "
                f"{tensor.type_name} in {where}: ONNX Runtime refuses it on every request: set data_type: "
                f"{tensor.type_name}"
            )
        problems += _runner_dims_problem(config, name, io, tensor, "input", where)
    given = {io.name for io in config.input} | state_inputs
    missing = [n for n in graph.inputs if n not in given]
    if missing:
        problems.append(
            f"{where} of model '{name}' needs inputs the config does not give ({tensor_names(missing)}): model.py "
            "would feed ONNX Runtime without them, and every request would fail: add them to config.pbtxt's inputs"
        )
    for io in config.output:
        if io.name not in graph.outputs:
            problems.append(
                f"output '{io.name}' of model '{name}' is not an output of {where} (its outputs: "
                f"{tensor_names(graph.outputs)}): model.py asks ONNX Runtime for the config's outputs by name, so "
                "every request would fail: rename it in config.pbtxt"
            )
        else:
            problems += _runner_dims_problem(config, name, io, graph.outputs[io.name], "output", where)
    return problems


def _runner_dims_problem(
    config: ModelConfig, name: str, io: Any, tensor: GraphTensor, role: str, where: str
) -> list[str]:
    """The config tensor ``io``'s dims against its graph tensor's shape, for tritongen's runners: an input reaches
    ONNX Runtime as Triton shaped it by the config (``reshape`` where given, the batch dim first where
    max_batch_size > 0), and ONNX Runtime refuses a rank or a fixed dim the graph does not take; an output is
    returned as ONNX Runtime computes it. -1 on either side takes any size (a dim the graph names symbolically is
    -1); an output the graph gives no per-item dims takes config dims of 1 (how tritongen builds a scalar per item).
    An output whose declared rank contradicts the one the graph computes, or whose shape is not known, is not
    judged."""
    graph = tensor.dims if tensor.dims is not None else tensor.computed
    if graph is None or tensor.conflict is not None:
        return []
    if role == "output" and tensor.dims is not None and tensor.computed is not None:
        graph = tuple(c if g == -1 else g for g, c in zip(graph, tensor.computed))  # what inference found too
    reshaped = io.HasField("reshape")
    dims = list(io.reshape.shape) if reshaped else list(io.dims)
    batched = config.max_batch_size > 0
    full = [-1, *dims] if batched else dims
    if len(graph) == len(full) and all(-1 in (g, d) or g == d for g, d in zip(graph, full)):
        return []
    per_item = list(graph[1:] if batched else graph)
    if role == "output" and not per_item and len(graph) == int(batched) and all(d == 1 for d in dims):
        return []
    given = f"{'reshape' if reshaped else 'dims'} {shape_text(dims)} in config.pbtxt"
    if batched:
        given += f" (shape {shape_text(full)} with the batch dim of max_batch_size > 0)"
    graph_words = f"shape {shape_text(graph)}" + (" (-1: any size)" if -1 in graph else "")
    if batched and len(graph) == len(dims) and all(-1 in (g, d) or g == d for g, d in zip(graph, dims)):
        fix = f"{where} has no batch dim: set max_batch_size: 0"
    elif not per_item:
        fix = "set dims: [ 1 ] with reshape: { shape: [ ] }"
    elif reshaped:
        fix = f"set reshape: {{ shape: [ {', '.join(map(str, per_item))} ] }}"
    else:
        fix = f"set dims: [ {', '.join(map(str, per_item))} ]"
    if role == "input":
        return [
            f"input '{io.name}' of model '{name}' has {given} but {where} takes {graph_words}: model.py feeds ONNX "
            f"Runtime the request's tensor as Triton shapes it by the config, so ONNX Runtime refuses every request: "
            f"{fix}"
        ]
    return [
        f"output '{io.name}' of model '{name}' has {given} but {where} computes {graph_words}: model.py returns what "
        f"ONNX Runtime computes, so every response would contradict the config: {fix}"
    ]


def _model_file_problems(
    config: ModelConfig, name: str, model_dir: Path, versions: list[int], done: _Backend
) -> list[str]:
    """The file each loaded version must hold for the backends whose file name Triton fixes."""
    if done.backend not in ("onnxruntime", "python", "tensorrt", "pytorch", "openvino", "tensorflow"):
        return []
    problems = []
    for version in versions:
        folder = model_dir / str(version)
        candidates = [done.filename] + (list(config.cc_model_filenames.values()) if done.backend == "tensorrt" else [])
        present = [c for c in candidates if (folder / c).exists()]
        if done.backend == "onnxruntime" and present and (folder / present[0]).is_dir():
            present = [c for c in present if (folder / c / "model.onnx").is_file()]
        if not present and done.backend == "tensorrt" and (folder / ARTIFACT_DIR / ENGINE_PLAN_NAME).is_file():
            continue  # prepared by `build --target tensorrt`: `tritongen engine` writes the plan on a GPU host
        if not present:
            problems.append(
                f"unable to find '{model_dir.name}/{version}/{done.filename}' for model '{name}' "
                f"(the {done.backend} backend loads it from every version folder in use)"
            )
    return problems


# --------------------------------------------------------------------------------------------------------
# A whole repository


@dataclass(frozen=True)
class ValidationReport:
    """Problems of every model in a repository; a model with an empty tuple is valid."""

    repo: Path
    problems_by_model: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Valid, but not servable yet: TensorRT plans prepared by `build --target tensorrt` and not built.
    warnings_by_model: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.problems_by_model.values())

    @property
    def problem_count(self) -> int:
        return sum(len(p) for p in self.problems_by_model.values())

    def lines(self) -> list[str]:
        """One ``model: problem`` line per problem, models in name order."""
        return [f"{model}: {p}" for model, problems in sorted(self.problems_by_model.items()) for p in problems]

    def warning_lines(self) -> list[str]:
        return [f"warning: {model}: {w}" for model, found in sorted(self.warnings_by_model.items()) for w in found]

    def text(self) -> str:
        """What ``tritongen validate`` prints (:meth:`summary`); every result of the API has ``text()``."""
        return self.summary()

    def summary(self) -> str:
        models = sorted(self.problems_by_model)
        if self.ok:
            return "\n".join(
                [
                    f"model repository {self.repo}: {len(models)} model(s) valid ({', '.join(models)})",
                    *self.warning_lines(),
                ]
            )
        head = f"model repository {self.repo}: {self.problem_count} problem(s) in {len(models)} model(s)"
        return "\n".join([head, *(f"  {line}" for line in self.lines()), *self.warning_lines()])


def check_repository_folder(repo: Path) -> None:
    """One error line when ``repo`` is missing or is a file (the same words for validate, verify, sign)."""
    if not repo.exists():
        raise TritongenError(
            f"model repository {repo} does not exist",
            "pass the folder that holds one sub-folder per model (tritongen build creates it)",
        )
    if not repo.is_dir():
        raise TritongenError(
            f"model repository {repo} is a file, not a folder",
            "pass the folder that holds one sub-folder per model, not a config or model file",
        )
    check_not_model_folder(repo)  # before anything reads its version folders (1/, 2/, ...) as models


def validate_repository(
    repo: Path, *, gpu_count: int | None = None, triton_version: str | None = None, skip_folders: Iterable[str] = ()
) -> ValidationReport:
    """Check every ``<repo>/<model>/config.pbtxt`` with the single-model rules, then the ensembles across models.

    With ``triton_version``, TensorRT plans recorded in the models' manifests must have been built with the
    TensorRT that Triton release runs (:mod:`tritongen.plan_compat`).

    Raises :class:`TritongenError` when ``repo`` is missing, is a file, holds no model folder, or a model
    folder has no ``config.pbtxt``, or a folder's name starts with a dot: Triton loads it as a model, tritongen
    refuses such names (``skip_folders``: a build's own scratch folders inside its staging folder).
    """
    repo = Path(repo)
    if triton_version:
        from .plan_compat import check_triton_version

        check_triton_version(triton_version)
    check_repository_folder(repo)
    skipped = set(skip_folders)
    top = top_level_problems(repo)
    if top:
        raise TritongenError(top[0], TOP_LEVEL_FIX)
    folders = sorted(p for p in repo.iterdir() if p.is_dir() and p.name not in skipped)
    hidden = [p.name for p in folders if p.name.startswith(".")]
    if hidden:
        raise TritongenError(hidden_folder_problem(hidden[0]), HIDDEN_FOLDER_FIX)
    model_dirs = folders
    if not model_dirs:
        raise TritongenError(
            f"model repository {repo} holds no model folders", "build a model into it with tritongen build"
        )
    problems: dict[str, list[str]] = {}
    configs: dict[str, ModelConfig] = {}
    unreadable: set[str] = set()
    for model_dir in model_dirs:
        config_path = model_dir / CONFIG_NAME
        if not config_path.is_file():
            raise TritongenError(
                f"model folder {model_dir} has no {CONFIG_NAME}",
                f"write {config_path} (tritongen build does), or move the folder out of the repository",
            )
        try:
            config = config_from_file(config_path)
        except TritongenError as err:
            problems[model_dir.name] = [err.message]
            unreadable.add(model_dir.name)
            continue
        configs[model_dir.name] = config
        problems[model_dir.name] = problems_in_config(config, model_dir, gpu_count=gpu_count)
    for model_dir in model_dirs:  # the repository is the boundary: Triton would follow these links
        found = link_problems(repo, model_dir)
        problems.setdefault(model_dir.name, []).extend(f"{p}: copy the files into the repository" for p in found)
    versions = {name: set(version_numbers(repo / name)) for name in configs}
    for name, found in problems_in_ensembles(configs, versions, unreadable).items():
        problems[name] += found
    if triton_version:
        from .plan_compat import plan_problems_from_repository

        for name, found in plan_problems_from_repository(repo, triton_version).items():
            problems[name] += found
    return ValidationReport(repo, {name: tuple(p) for name, p in problems.items()}, _pending_plan_warnings(repo))


def _pending_plan_warnings(repo: Path) -> dict[str, tuple[str, ...]]:
    from .plan_compat import pending_plans_from_repository

    return {
        name: (
            f"TensorRT plan for version(s) {', '.join(map(str, versions))} not built yet: Triton cannot load "
            f"this model until `tritongen engine {repo}` ran on a GPU host with TensorRT "
            f"(or `tritongen deploy {repo} --to docker --out DIR` writes an engine builder for it)",
        )
        for name, versions in pending_plans_from_repository(repo).items()
    }


def check_repository(
    repo: Path, *, gpu_count: int | None = None, triton_version: str | None = None, skip_folders: Iterable[str] = ()
) -> ValidationReport:
    """:func:`validate_repository`, raising :class:`TritongenError` listing every problem unless all is valid."""
    report = validate_repository(repo, gpu_count=gpu_count, triton_version=triton_version, skip_folders=skip_folders)
    if not report.ok:
        count = report.problem_count
        raise TritongenError(
            f"{count} problem{'s' if count != 1 else ''} in model repository {repo}",
            "fix the config.pbtxt files (or folders) named below, then run `tritongen validate` again",
            details="\n".join(report.lines()),
        )
    return report
