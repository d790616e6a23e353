"""Pre- and post-processing steps of a generated ensemble: Python-backend model folders, decided here.

Each step is a :class:`PythonStep` (name, tensors, which template runs it, its parameters and the files it
needs); :func:`stage_python_step` writes ``<stage>/<name>/config.pbtxt`` and ``<version>/model.py`` plus
those files. The templates under ``templates/python/`` only apply what is decided here.

Steps:

- :func:`text_preprocess_step`: ``TEXT`` (TYPE_STRING) -> the model's tokenizer outputs (INT64), padded to the
  longest text of each server batch;
- :func:`image_preprocess_step`: ``IMAGE`` (encoded bytes) -> ``pixel_values`` (FP32, CHW);
- :func:`postprocess_step`: ``mean_pool_normalize`` / ``normalize`` -> ``EMBEDDING``; ``softmax_topk`` ->
  ``LABELS`` + ``SCORES``;
- :func:`custom_step_from_file`: a plain function of the user's (``preprocess(batch) -> dict`` or
  ``postprocess(batch) -> dict``) wrapped so users never write ``TritonPythonModel`` boilerplate.
"""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .files import read_problem, regular_bytes
from .hf import MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS
from .names import check_labels
from .spec import BuildSpec, TensorSpec, tensor_spec_from_arg
from .templates import render, template_path

TEXT_INPUT = "TEXT"
IMAGE_INPUT = "IMAGE"
EMBEDDING_OUTPUT = "EMBEDDING"
LABELS_OUTPUT = "LABELS"
SCORES_OUTPUT = "SCORES"
LABELS_FILE = "labels.txt"
DEFAULT_MAX_TEXT_BYTES = 65536  # far above any tokenizer's max_length in text; a 1 MB string is refused
DEFAULT_TOP_K = 5
MAX_USER_CODE_BYTES = 4 << 20  # a --preprocess/--postprocess .py: a few KiB of numpy
POSTPROCESS_KINDS = ("mean_pool_normalize", "normalize", "softmax_topk")


@dataclass(frozen=True)
class PythonStep:
    """One Python-backend model of an ensemble, fully decided."""

    name: str
    template: str  # file under templates/python/
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)
    # name inside the version folder -> its bytes, read once when the step was decided (what was checked is written)
    files: Mapping[str, bytes] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)  # name inside the version folder -> content
    folders: Mapping[str, Path] = field(
        default_factory=dict
    )  # name inside the version folder -> source folder (copied)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "template": self.template,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parameters": dict(self.parameters),
        }


def text_preprocess_step(
    name: str,
    tokenizer_dir: Path,
    output_names: tuple[str, ...],
    max_length: int,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
) -> PythonStep:
    from .hf import tokenizer_file_bytes

    files = {f"tokenizer/{name}": data for name, data in tokenizer_file_bytes(tokenizer_dir).items()}
    return PythonStep(
        name=name,
        template="text_preprocess.py",
        inputs=(TensorSpec(TEXT_INPUT, "STRING", (1,)),),
        outputs=tuple(TensorSpec(n, "INT64", (-1,)) for n in output_names),
        parameters={"max_length": str(max_length), "max_text_bytes": str(max_text_bytes)},
        files=files,
    )


# The longest token profile followed: past it the tokenizer's max_length is no model's (all-MiniLM-L6-v2 256, BERT
# 512, long-context encoders 8192); a tokenizer without model_max_length reads as 100000 (tritongen.hf).
MAX_TOKEN_PROFILE = 8192


def model_spec_for_tokenizer(spec: BuildSpec, max_length: int) -> BuildSpec:
    """The model step's :class:`~tritongen.spec.BuildSpec` of a text ensemble, its TensorRT profile able to take
    what the tokenizer step sends: up to ``max_length`` tokens (the tokenizer truncates there), in every ``-1``
    dimension of the token inputs.

    The profile's MAX of such a dimension is its ``--dim-range`` MAX, else ``--max-dim`` (default 128,
    :mod:`tritongen.dim_ranges`): the default is raised to ``max_length``; a ``--max-dim`` or a ``--dim-range``
    MAX given below it is refused, since the engine would refuse every text of more tokens than that. Other
    targets than ``tensorrt`` have no profile: ``spec`` is returned as it is."""
    import dataclasses

    from .spec import DEFAULT_MAX_DYNAMIC_DIM

    if spec.target != "tensorrt" or max_length > MAX_TOKEN_PROFILE:  # no real limit (a tokenizer without
        return spec  # model_max_length): a profile that long is no engine; --max-dim stays the engine's limit
    given = {(r.input, r.axis): r for r in spec.dim_ranges}
    unranged = []
    for t in spec.inputs:
        for axis in t.dynamic_axes:
            r = given.get((t.name, axis))
            if r is None:
                unranged.append((t.name, axis))
            elif r.max < max_length:
                raise TritongenError(
                    f"--dim-range {r.text} ends at {r.max} tokens, but the tokenizer step sends up to {max_length} "
                    f"(its max_length): the TensorRT engine would refuse texts of {r.max + 1} to {max_length} tokens",
                    f"give it MAX {max_length}: --dim-range {r.input}:{r.axis}:{r.min}:{r.opt}:{max_length}",
                )
    if not unranged or spec.max_dynamic_dim >= max_length:
        return spec
    if spec.max_dynamic_dim != DEFAULT_MAX_DYNAMIC_DIM:
        name, axis = unranged[0]
        raise TritongenError(
            f"--max-dim {spec.max_dynamic_dim} is below the {max_length} tokens the tokenizer step sends (its "
            f"max_length): the TensorRT engine would refuse texts of {spec.max_dynamic_dim + 1} to {max_length} "
            "tokens",
            f"pass --max-dim {max_length} (or leave it out), or --dim-range {name}:{axis}:MIN:OPT:{max_length}",
        )
    return dataclasses.replace(spec, max_dynamic_dim=max_length)


def image_preprocess_step(name: str, settings: Any, output: TensorSpec) -> PythonStep:
    return PythonStep(
        name=name,
        template="image_preprocess.py",
        inputs=(TensorSpec(IMAGE_INPUT, "STRING", (1,)),),
        outputs=(output,),
        parameters={"max_image_bytes": str(MAX_IMAGE_FILE_BYTES), "max_image_pixels": str(MAX_IMAGE_PIXELS)},
        texts={"image_processor.json": json.dumps(settings.to_dict(), indent=2) + "\n"},
    )


def postprocess_step(
    name: str,
    kind: str,
    model_outputs: tuple[TensorSpec, ...],
    attention_mask: TensorSpec | None = None,
    labels: tuple[str, ...] = (),
    top_k: int | None = None,
) -> PythonStep:
    """Decide a built-in post-processing step from the model's (resolved) outputs."""
    if kind not in POSTPROCESS_KINDS:
        raise TritongenError(
            f"unknown post-processing '{kind}'", f"use one of {', '.join(POSTPROCESS_KINDS)}, raw, or a .py file"
        )
    first = model_outputs[0]
    if first.dtype not in ("FP32", "FP16", "FP64"):
        raise TritongenError(
            f"the model's output '{first.name}' is {first.dtype}, not floating point",
            "use --postprocess raw or your own .py",
        )
    if kind == "mean_pool_normalize":
        if len(first.dims) != 2 or attention_mask is None:
            raise TritongenError(
                "mean pooling needs token embeddings [seq, hidden] and an "
                f"attention mask; output '{first.name}' has dims {list(first.dims)}",
                "use --postprocess normalize for a model that already pools, or raw",
            )
        hidden = first.dims[-1]
        return PythonStep(
            name=name,
            template="postprocess.py",
            inputs=(first, attention_mask),
            outputs=(TensorSpec(EMBEDDING_OUTPUT, "FP32", (hidden,)),),
            parameters={"kind": kind},
        )
    if kind == "normalize":
        if len(first.dims) != 1:
            raise TritongenError(
                f"output '{first.name}' has dims {list(first.dims)}, not one embedding per item",
                "use --postprocess mean-pool for token embeddings, or raw",
            )
        return PythonStep(
            name=name,
            template="postprocess.py",
            inputs=(first,),
            outputs=(TensorSpec(EMBEDDING_OUTPUT, "FP32", first.dims),),
            parameters={"kind": kind},
        )
    classes = first.dims[-1]
    if len(first.dims) != 1 or classes == -1:
        raise TritongenError(
            f"output '{first.name}' has dims {list(first.dims)}, not one score per class",
            "use --postprocess raw or your own .py",
        )
    if not labels:
        labels = tuple(f"LABEL_{i}" for i in range(classes))
    if len(labels) != classes:
        raise TritongenError(
            f"the model has {classes} classes but {len(labels)} labels (id2label)", "make id2label list every class"
        )
    labels = check_labels(labels, "labels")  # the generated model splits labels.txt on b"\n" only
    if top_k is not None and top_k > classes:  # it was cut to the classes silently
        raise TritongenError(
            f"--top-k {top_k} is more than the model's {classes} classes", f"use --top-k 1 to {classes}"
        )
    k = min(top_k or DEFAULT_TOP_K, classes)
    if k < 1:
        raise TritongenError(f"--top-k {top_k} is below 1", "use --top-k 1 or more")
    return PythonStep(
        name=name,
        template="postprocess.py",
        inputs=(first,),
        outputs=(TensorSpec(LABELS_OUTPUT, "STRING", (k,)), TensorSpec(SCORES_OUTPUT, "FP32", (k,))),
        parameters={"kind": kind, "top_k": str(k)},
        texts={LABELS_FILE: "\n".join(labels)},
    )


# ------------------------------------------------------------------------------------------ custom steps


@dataclass(frozen=True)
class UserCode:
    path: Path
    function: str
    declared: tuple[TensorSpec, ...] | None  # INPUTS of a preprocess, OUTPUTS of a postprocess
    source: str = ""  # the text read and parsed: what the step serves (the file read again could differ)


def user_code_from_file(path: Path, function: str) -> UserCode:
    """Read (without running it) a user's ``.py``: the function must exist; ``INPUTS``/``OUTPUTS`` are literals."""
    path = Path(path).expanduser().resolve()
    flag = f"--{function}"
    if not path.is_file():
        raise TritongenError(
            f"{flag} file {path} does not exist", f"pass a .py file defining {function}(batch) -> dict"
        )
    try:
        source = regular_bytes(path, MAX_USER_CODE_BYTES).decode()
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise TritongenError(
            f"{flag} file {path} has a syntax error at line {exc.lineno}", "fix the Python syntax"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        shown = read_problem(exc) if isinstance(exc, OSError) else f"cannot be read ({exc})"
        raise TritongenError(f"{flag} file {path} {shown}", "pass a readable UTF-8 .py file") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte; nesting the parser cannot follow
        raise TritongenError(
            f"{flag} file {path} cannot be parsed ({type(exc).__name__})", "pass a plain UTF-8 .py file"
        ) from None
    functions = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in functions:
        raise TritongenError(
            f"{flag} file {path.name} defines no function '{function}'",
            f"define {function}(batch: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray] at module level",
        )
    key = "INPUTS" if function == "preprocess" else "OUTPUTS"
    declared = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == key for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise TritongenError(
                    f"{key} in {path.name} is not a literal list", f'write {key} = ["NAME:DTYPE:DIMS", ...]'
                ) from None
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
                raise TritongenError(
                    f'{key} in {path.name} is not a list of "NAME:DTYPE:DIMS" strings',
                    f'write {key} = ["TEXT:STRING:1"] (dims without the batch dimension)',
                )
            declared = tuple(tensor_spec_from_arg(v) for v in value)
    if declared is None and function == "postprocess":
        raise TritongenError(
            f"{path.name} does not declare its outputs", 'add OUTPUTS = ["NAME:DTYPE:DIMS", ...] at module level'
        )
    return UserCode(path=path, function=function, declared=declared, source=source)


def custom_step_from_code(
    name: str, code: UserCode, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> PythonStep:
    return PythonStep(
        name=name,
        template="custom_step.py",
        inputs=inputs,
        outputs=outputs,
        parameters={"function": code.function},
        texts={"user_code.py": code.source},  # the text whose declarations were read, not the file read again
    )


# ------------------------------------------------------------------------------------------ writing


def python_step_config_text(
    step: PythonStep,
    max_batch_size: int,
    preferred_batch_sizes: tuple[int, ...],
    max_queue_delay_us: int,
    instance_count: int = 1,
) -> str:
    from .config import tensor_entries
    from .scheduling import dynamic_batching_entries

    # Python steps take requests of different shapes in one execute() (they group by shape themselves), so
    # variable-size inputs are ragged: the dynamic batcher need not wait for requests of equal shapes.
    return render(
        "config.pbtxt.j2",
        name=step.name,
        platform="",
        backend="python",
        max_batch_size=max_batch_size,
        default_model_filename="",
        cc_model_filenames={},
        gpu_accelerators=[],
        inputs=tensor_entries(step.inputs, ragged=True),
        outputs=tensor_entries(step.outputs),
        dynamic_batching={
            "preferred_batch_sizes": preferred_batch_sizes,
            "max_queue_delay_us": max_queue_delay_us,
            **dynamic_batching_entries(0, 0, ()),
        },
        instance_groups=[{"kind": "KIND_CPU", "count": instance_count, "rate_limiter": None}],
        warmups=[],
        parameters=dict(step.parameters),
    )


def stage_python_step(step: PythonStep, stage: Path, version: int, config_text: str) -> Path:
    """Write ``stage/<step.name>/`` (config, ``<version>/model.py`` and the step's files) and its manifest, with
    the sha256 of every one of those files (what ``tritongen verify`` checks); returns the folder."""
    from .manifest import PYTHON_STEP, file_hashes, new_manifest, write_manifest

    folder = stage / step.name
    version_dir = folder / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_path(f"python/{step.template}"), version_dir / "model.py")
    for rel, data in step.files.items():
        (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (version_dir / rel).write_bytes(data)
    for rel, text in step.texts.items():
        (version_dir / rel).write_bytes(text.encode("utf-8"))  # exactly these bytes: no newline translation
    (folder / "config.pbtxt").write_text(config_text)
    write_manifest(
        folder,
        version,
        new_manifest(
            version,
            file_hashes(folder, [p for p in folder.rglob("*") if p.is_file()]),
            kind=PYTHON_STEP,
            with_command=False,
            step=step.to_dict(),
        ),
    )
    return folder
