"""The build spec: one frozen, typed description of what to build, with every default resolved here.

The CLI (or a library caller) gathers options into :func:`build_spec_from_options`; everything after that
reads :class:`BuildSpec` only. Output tensors are usually unknown until the model has run once; the build
then makes a new spec with :meth:`BuildSpec.with_outputs`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .dim_ranges import (DEFAULT_DIM_OPT, DimRange, check_ranges, dim_range_from_arg, dim_range_from_dict,
                         inputs_with_ranges)
from .dtypes import triton_dtype, triton_from_numpy
from .errors import TritongenError
from .names import check_name

TARGETS = ("local", "onnxruntime", "tensorrt")  # tensorrt: prepared ONNX + profiles; `tritongen engine` makes model.plan
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_OPSET = 18
DEFAULT_QUEUE_DELAY_US = 500
DEFAULT_DYNAMIC_DIM = DEFAULT_DIM_OPT  # size (OPT) of a -1 dimension without --dim-range (tritongen.dim_ranges)
PRECISIONS = ("fp32", "fp16", "int8")
EXPORTERS = ("auto", "dynamo", "torchscript")
CALIB_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_MIN_COSINE = 0.99
DEFAULT_MAX_DYNAMIC_DIM = 128  # TensorRT profile maximum for every -1 dimension


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: Triton name, Triton data type (``FP32``), dims without the batch dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not _TENSOR_NAME_RE.fullmatch(check_name(self.name, "tensor name")):
            raise TritongenError(
                f"tensor name '{self.name}' is not valid",
                "use letters, digits and underscores, starting with a letter",
            )
        object.__setattr__(self, "dtype", triton_dtype(self.dtype))
        dims = tuple(int(d) for d in self.dims)
        bad = [d for d in dims if d == 0 or d < -1]
        if bad:
            raise TritongenError(
                f"tensor '{self.name}' has dimension {bad[0]}",
                "every dimension must be a positive size or -1 for a variable size",
            )
        object.__setattr__(self, "dims", dims)

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        """Indices (into ``dims``) of the variable dimensions."""
        return tuple(i for i, d in enumerate(self.dims) if d == -1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


def tensor_spec_from_arg(arg: str) -> TensorSpec:
    """Parse ``NAME:DTYPE:DIMS`` (dims comma-separated, ``-1`` variable, empty for a scalar per item)."""
    parts = arg.split(":")
    if len(parts) != 3 or not parts[0]:
        raise TritongenError(
            f"--input '{arg}' is not NAME:DTYPE:DIMS",
            "write it like x:FP32:3,224,224 (dims without the batch dimension, -1 for variable)",
        )
    name, dtype, dims_text = parts
    try:
        dims = tuple(int(d) for d in dims_text.replace(" ", "").split(",") if d != "")
    except ValueError:
        raise TritongenError(
            f"--input '{arg}' has dims '{dims_text}' that are not integers",
            "write dims as comma-separated integers like 3,224,224 (-1 for variable)",
        ) from None
    if not dims:
        dims = (1,)
    return TensorSpec(name=name, dtype=dtype, dims=dims)


def tensor_spec_from_dict(entry: Mapping[str, Any], where: str) -> TensorSpec:
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise TritongenError(f"{where} is not a mapping with a 'name'", "write entries like {name: x, dtype: FP32, dims: [3, 224, 224]}")
    dims = entry.get("dims", entry.get("shape", [1]))
    if isinstance(dims, str):
        dims = [int(d) for d in dims.split(",") if d.strip()]
    if not isinstance(dims, (list, tuple)):
        raise TritongenError(f"{where} has dims {dims!r}", "write dims as a list like [3, 224, 224]")
    return TensorSpec(name=str(entry["name"]), dtype=str(entry.get("dtype", entry.get("data_type", "FP32"))), dims=tuple(dims))


def tensor_specs_from_samples(samples: Mapping[str, Any], batched: bool) -> tuple[TensorSpec, ...]:
    """Inputs inferred from sample arrays: names from keys, dtype from the array, dims from the shape."""
    specs = []
    for name, array in samples.items():
        shape = tuple(array.shape[1:] if batched else array.shape)
        specs.append(TensorSpec(name=name, dtype=triton_from_numpy(array.dtype), dims=shape or (1,)))
    return tuple(specs)


@dataclass(frozen=True)
class BuildSpec:
    """Everything a build needs, defaults resolved. Paths are absolute."""

    model_path: Path
    name: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()  # filled in once the model has run
    max_batch_size: int = 8
    target: str = "local"
    repo: Path = Path("model_repository").resolve()
    model_factory: str | None = None
    allow_pickle: bool = False
    sample_inputs: Path | None = None
    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    force: bool = False
    new_version: bool = False
    instance_count: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    warmup: bool = True
    dynamic_dim_size: int = DEFAULT_DYNAMIC_DIM
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Ensembles (tritongen.ensemble): pre-processing -> model -> post-processing.
    task: str | None = None  # text-classification | feature-extraction | image-classification (None: detected)
    tokenizer: Path | None = None  # tokenizer folder for a model file (a Hugging Face folder carries its own)
    preprocess: str | None = None  # tokenizer | image | none | path/to/file.py (None: from the task)
    postprocess: str | None = None  # mean-pool | normalize | softmax-topk | raw | path/to/file.py (None: from the task)
    top_k: int | None = None  # labels returned by softmax-topk (default min(5, classes))
    labels: tuple[str, ...] = ()  # class names in index order: written as the first output's label_filename
    # Precision (tritongen.precision): FP16 / INT8 Q/DQ variants behind an accuracy guard.
    precision: str = "fp32"  # fp32 | fp16 | int8
    calib_data: Path | None = None  # .npz file or folder, or a text file of lines (with tokenizer)
    calib_method: str = "minmax"  # minmax | entropy | percentile
    min_cosine: float = DEFAULT_MIN_COSINE  # guard: mean cosine >= this, min cosine >= this - 0.01
    min_top1: float | None = None  # guard: top-1 agreement for [batch, classes] outputs
    max_dynamic_dim: int = DEFAULT_MAX_DYNAMIC_DIM  # TensorRT profiles: max size of every -1 dimension
    exporter: str = "auto"  # auto (dynamo, then TorchScript if it fails) | dynamo | torchscript
    dim_ranges: tuple[DimRange, ...] = ()  # given ranges of -1 dims (tritongen.dim_ranges fills in the rest)
    # flags | spec | samples (inferred from --sample-inputs: every dim fixed unless ranged) | onnx (read from the graph)
    inputs_from: str = "flags"
    consts: tuple[tuple[str, Any], ...] = ()  # (name, int/float/bool) arguments of forward() fixed at export

    @property
    def is_ensemble(self) -> bool:
        """Whether ``tritongen build`` makes a pre -> model -> post ensemble rather than one model."""
        return self.model_path.is_dir() or any(v is not None for v in (self.task, self.tokenizer, self.preprocess, self.postprocess))

    def with_outputs(self, outputs: Iterable[TensorSpec]) -> "BuildSpec":
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
            elif isinstance(value, tuple) and value and isinstance(value[0], (TensorSpec, DimRange)):
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


def _yaml_spec(path: Path) -> dict[str, Any]:
    from .spec_file import yaml_spec

    return yaml_spec(path)


def _default_name(model_path: Path) -> str:
    stem = model_path.name if model_path.is_dir() else model_path.stem
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".") or "model"


def build_spec_from_options(
    model_path: str | Path,
    *,
    name: str | None = None,
    inputs: Iterable[str] = (),
    outputs: Iterable[str] = (),
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
    max_dynamic_dim: int | None = None,
    exporter: str | None = None,
    dim_ranges: Iterable[str] = (),
    consts: Iterable[str] = (),
) -> BuildSpec:
    """Resolve CLI/library options (flags over ``--spec`` YAML over defaults) into one :class:`BuildSpec`."""
    model = Path(model_path).expanduser().resolve()
    if not model.exists():
        raise TritongenError(f"model file {model_path} does not exist", "check the path")
    file_opts = _yaml_spec(Path(spec_file).expanduser()) if spec_file else {}

    def pick(flag, key, default):
        return flag if flag is not None else file_opts.get(key, default)

    onnx_file = _is_onnx_file(model)
    mbs = int(pick(max_batch_size, "max_batch_size", 8 if not onnx_file else -1))  # ONNX: -1 until read from the graph
    if mbs < 0 and not (onnx_file and pick(max_batch_size, "max_batch_size", None) is None):
        raise TritongenError(f"--max-batch-size {mbs} is negative", "use 0 for no batching or a positive batch size")
    samples_path = Path(sample_inputs).expanduser().resolve() if sample_inputs else None

    ranges = tuple(dim_range_from_arg(a) for a in dim_ranges) or tuple(
        dim_range_from_dict(e, f"spec file dim_ranges #{i + 1}")
        for i, e in enumerate(file_opts.get("dim_ranges") or ()))
    inputs_from = "flags"
    if inputs:
        input_specs = tuple(tensor_spec_from_arg(a) for a in inputs)
    elif file_opts.get("inputs"):
        inputs_from = "spec"
        if not isinstance(file_opts["inputs"], list):
            raise TritongenError("spec file 'inputs' is not a list", "write inputs as a list of {name, dtype, dims}")
        input_specs = tuple(tensor_spec_from_dict(e, f"spec file input #{i + 1}") for i, e in enumerate(file_opts["inputs"]))
    elif onnx_file:
        input_specs = ()  # read from the graph below
    elif samples_path is not None:
        from .samples import arrays_from_npz

        input_specs = tensor_specs_from_samples(arrays_from_npz(samples_path), batched=mbs > 0)
        input_specs = inputs_with_ranges(input_specs, ranges)
        inputs_from = "samples"
    elif model.is_dir() or tokenizer is not None:
        input_specs = ()  # a Hugging Face folder or a tokenizer: the ensemble builder decides the inputs
    else:
        raise TritongenError(
            "the model's inputs are not declared",
            "pass --input NAME:DTYPE:DIMS (e.g. x:FP32:3,224,224), --spec spec.yaml or --sample-inputs samples.npz",
        )

    out_names: tuple[str, ...] = tuple(outputs)
    if not out_names and file_opts.get("outputs"):
        out_names = tuple(str(o["name"]) if isinstance(o, Mapping) else str(o) for o in file_opts["outputs"])
    for n in out_names:
        TensorSpec(n, "FP32", (1,))  # validates the name
    if onnx_file:
        from .onnx_input import spec_io_from_onnx

        if consts:
            raise TritongenError("--const does not apply to an ONNX file: its graph already holds every value",
                                 "drop --const")
        input_specs, mbs = spec_io_from_onnx(model, input_specs, out_names, None if mbs < 0 else mbs)
        inputs_from = "onnx"

    chosen_target = pick(target, "target", "local")
    if chosen_target not in TARGETS:
        raise TritongenError(f"unknown target '{chosen_target}'", f"use one of {', '.join(TARGETS)}")
    if force and new_version:
        raise TritongenError("--force and --new-version both given", "use --force to replace the model or --new-version to add a version, not both")
    preferred = tuple(int(b) for b in (preferred_batch_sizes or file_opts.get("preferred_batch_sizes", ()) or ()))
    bad = [b for b in preferred if b < 1 or b > mbs]
    if bad:
        raise TritongenError(f"preferred batch size {bad[0]} is outside 1..{mbs}", "use sizes between 1 and --max-batch-size")
    count = int(pick(instance_count, "instance_count", 1))
    if count < 1:
        raise TritongenError(f"instance count {count} is below 1", "use --instances 1 or more")
    chosen_exporter = str(pick(exporter, "exporter", "auto"))
    if chosen_exporter not in EXPORTERS:
        raise TritongenError(f"unknown exporter '{chosen_exporter}'", f"use one of {', '.join(EXPORTERS)}")
    tolerances = (float(pick(atol, "atol", DEFAULT_ATOL)), float(pick(rtol, "rtol", DEFAULT_RTOL)))
    if min(tolerances) < 0:
        raise TritongenError("--atol/--rtol must not be negative", "use tolerances >= 0")
    return BuildSpec(
        model_path=model,
        name=check_model_name(pick(name, "name", None) or _default_name(model)),
        inputs=input_specs,
        output_names=out_names,
        max_batch_size=mbs,
        target=chosen_target,
        repo=Path(repo).expanduser().resolve(),
        model_factory=pick(model_factory, "model_factory", None),
        allow_pickle=allow_pickle,
        sample_inputs=samples_path,
        opset=int(pick(opset, "opset", DEFAULT_OPSET)),
        atol=tolerances[0],
        rtol=tolerances[1],
        force=force,
        new_version=new_version,
        instance_count=count,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=int(pick(max_queue_delay_us, "max_queue_delay_us", DEFAULT_QUEUE_DELAY_US)),
        warmup=bool(pick(warmup, "warmup", True)),
        dynamic_dim_size=_dynamic_dim_size(file_opts),
        task=task,
        tokenizer=Path(tokenizer).expanduser().resolve() if tokenizer is not None else None,
        preprocess=preprocess,
        postprocess=postprocess,
        top_k=top_k,
        exporter=chosen_exporter,
        dim_ranges=check_ranges(ranges, input_specs),
        consts=_consts(consts, file_opts),
        inputs_from=inputs_from,
        **_precision_options(pick, chosen_target, precision, calib_data, calib_method, min_cosine, min_top1, max_dynamic_dim),
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


def _consts(args: Iterable[str], file_opts: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    from .consts import const_from_arg, consts_from_mapping

    given = tuple(const_from_arg(a) for a in args) or consts_from_mapping(file_opts.get("consts") or {})
    names = [n for n, _ in given]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TritongenError(f"--const {twice[0]} is given twice", "give each argument one value")
    return given


def _dynamic_dim_size(file_opts: Mapping[str, Any]) -> int:
    size = int(file_opts.get("dynamic_dim_size", DEFAULT_DYNAMIC_DIM))
    if size < 1:
        raise TritongenError(f"spec dynamic_dim_size {size} is below 1",
                             "use the size samples give every -1 dimension, e.g. 16")
    return size


def _precision_options(pick, target, precision, calib_data, calib_method, min_cosine, min_top1, max_dynamic_dim) -> dict[str, Any]:
    """Resolve and check the precision options (flags over ``--spec`` YAML over defaults)."""
    chosen = str(pick(precision, "precision", "fp32")).lower()
    if chosen not in PRECISIONS:
        raise TritongenError(f"unknown precision '{chosen}'", f"use one of {', '.join(PRECISIONS)}")
    if chosen != "fp32" and target == "local":
        raise TritongenError(f"--precision {chosen} with --target local: the Python-backend model runs FP32 ONNX Runtime on the CPU",
                             "use --target onnxruntime (Triton builds a TensorRT engine at load) or --target tensorrt")
    method = str(pick(calib_method, "calib_method", "minmax")).lower()
    if method not in CALIB_METHODS:
        raise TritongenError(f"unknown calibration method '{method}'", f"use one of {', '.join(CALIB_METHODS)}")
    data = pick(calib_data, "calib_data", None)
    if chosen == "int8" and data is None:
        raise TritongenError("--precision int8 needs calibration data", "pass --calib-data with a few hundred representative samples (.npz file or folder, or a text file with --tokenizer)")
    if data is not None and not Path(data).expanduser().exists():
        raise TritongenError(f"calibration data {data} does not exist",
                             "pass --calib-data with an .npz file, a folder of .npz files or a text file")
    cosine = float(pick(min_cosine, "min_cosine", DEFAULT_MIN_COSINE))
    top1 = pick(min_top1, "min_top1", None)
    if not 0.0 < cosine <= 1.0 or (top1 is not None and not 0.0 < float(top1) <= 1.0):
        raise TritongenError("--min-cosine/--min-top1 must be in (0, 1]", "use e.g. --min-cosine 0.99 --min-top1 0.99")
    max_dim = int(pick(max_dynamic_dim, "max_dynamic_dim", DEFAULT_MAX_DYNAMIC_DIM))
    if max_dim < 1:
        raise TritongenError(f"--max-dim {max_dim} is below 1", "use the largest size any -1 dimension may take")
    return {"precision": chosen, "calib_data": Path(data).expanduser().resolve() if data is not None else None,
            "calib_method": method, "min_cosine": cosine, "min_top1": None if top1 is None else float(top1),
            "max_dynamic_dim": max_dim}
