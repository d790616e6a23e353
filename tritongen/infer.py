"""``tritongen infer``: send inputs to a served model and, with ``check``, compare against the build's reference.

By default the inputs are the samples the build saved (``<model>/<version>/tritongen/samples.npz``) and the
reference is the PyTorch output the build computed for them, so ``infer --check`` proves end to end that the
served model answers like the original. For an FP16/INT8 variant (``build --precision``) the served answers are
held to the accuracy guard's bar recorded in the manifest (mean/min cosine, top-1 agreement) instead of the FP32
parity tolerances: a variant is not meant to match FP32 to 1e-4.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .client import MAX_SEQUENCE_ID, default_url, spec_protocol
from .dtypes import numpy_from_value
from .errors import TritongenError
from .fields import check_fields
from .files import read_problem, regular_bytes
from .layout import (
    REFERENCE_NAME,
    SAMPLES_NAME,
    artifact_dir,
    latest_artifacts,
    version_from_api,
    version_numbers,
)
from .manifest import ENSEMBLE, Manifest, finite_number, read_manifest
from .names import one_line
from .npz import arrays_and_form_from_npz, arrays_from_npz
from .parity import ParityReport, compare_arrays
from .precision.accuracy import AccuracyReport, accuracy_from_outputs
from .server.local import local_server, served_repository

CheckReport = ParityReport | AccuracyReport  # both have .ok and .table()


@dataclass(frozen=True)
class InferSpec:
    name: str
    input_file: Path | None = None
    repo: Path = Path("model_repository")
    url: str | None = None
    protocol: str = ""  # "": the URL's scheme (http://, grpc://), else $TRITONGEN_URL's, else grpc
    check: bool = False
    timeout_s: float = 60.0
    texts: tuple[str, ...] = ()  # sent as TEXT (TYPE_STRING) to a text-in ensemble
    images: tuple[Path, ...] = ()  # encoded image files, sent as IMAGE to an image-in ensemble
    # a stateful model: stream input_file in chunks as one sequence (tritongen.infer_sequence)
    sequence: bool = False
    chunk_size: int | None = None  # default: the first input's fixed size
    sequence_id: int = 1  # the sequence's correlation ID
    # the version to send the build's samples to and check against; None: the highest version the server has
    # ready (the one Triton answers a request without a version with), not the newest folder on disk
    model_version: int | None = None
    # arrays to send, by input name (the Python API's in-memory form of input_file)
    inputs: Mapping[str, Any] | None = None
    # an .npz of the outputs those inputs should get, by output name (your own PyTorch's, say): compared within
    # atol + rtol * |expected|, as the build's parity gate compares
    expected: Path | None = None
    atol: float = 1e-4
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        check_fields(self, "infer")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise TritongenError(f"--chunk-size {self.chunk_size} is below 1", "pass 1 or more values")
        if self.chunk_size is not None and not self.sequence:  # it was ignored
            raise TritongenError(
                "--chunk-size cuts --sequence's input into requests, and --sequence is not given",
                "pass --sequence to stream the input as one sequence, or drop --chunk-size",
            )
        if self.expected is None and (self.atol, self.rtol) != (1e-4, 1e-3):  # they were ignored
            raise TritongenError(
                "--atol/--rtol set the tolerances of --expected, which is not given",
                "pass --expected with the outputs you expect (--check uses the build's own tolerances)",
            )
        if self.atol < 0 or self.rtol < 0:  # every answer would fail
            raise TritongenError(
                f"--atol {self.atol:g} / --rtol {self.rtol:g}: a tolerance is negative", "use 0 or more"
            )
        if self.sequence_id < 1:  # 0 is Triton's "no sequence"
            raise TritongenError(f"--sequence-id {self.sequence_id} is below 1", "pass an ID of 1 or more")
        if self.sequence_id > MAX_SEQUENCE_ID:  # the request carries it as an int64
            raise TritongenError(
                f"--sequence-id {self.sequence_id} is over {MAX_SEQUENCE_ID}", "pass an ID that an int64 holds"
            )
        object.__setattr__(self, "protocol", spec_protocol(self.url, self.protocol))
        if self.inputs is not None:
            object.__setattr__(self, "inputs", _arrays_given(self.inputs))


def model_from_folder(name: str, repo: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """A model's folder given for its name (``model_repository/resnet``): the model's name and its repository
    (``repo``, where given, must be that repository). Any other name comes back as it is, with None."""
    folder = Path(name)
    if len(folder.parts) < 2 or not (folder / "config.pbtxt").is_file():
        return name, None
    folder = Path(os.path.abspath(folder))  # not resolve(): a linked model folder stays a link
    if repo is not None and Path(os.path.abspath(repo)) != folder.parent:
        raise TritongenError(
            f"{name} is a model folder of {folder.parent}, but --repo names {repo}",
            f"pass the model's name with --repo, or its folder alone: tritongen infer {name}",
        )
    return folder.name, folder.parent


def _arrays_given(given: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``inputs`` as NumPy arrays (lists, tensors with ``.numpy()`` and scalars taken), one per input name."""
    if not given:
        raise TritongenError("infer option inputs is empty", 'pass inputs={"INPUT_NAME": array, ...}')
    arrays = {}
    for name, value in given.items():
        array = numpy_from_value(value, f"infer input '{name}'")
        if array.dtype == object and not all(isinstance(v, (str, bytes)) for v in array.reshape(-1)):
            raise TritongenError(
                f"infer input '{name}' holds Python objects", "pass a numeric array, or text as str/bytes"
            )
        arrays[name] = array
    return arrays


@dataclass(frozen=True)
class StaleServer:
    """A failed check's likely cause: the local server started before the checked version was built (``build
    --force`` into the repository it serves) and still answers with the files it loaded then."""

    cause: str  # "model lin was rebuilt at ... after the server started at ..."
    fix: str


def checked_output_file(path: Path) -> Path:
    """``path`` if answers can be saved there (a ``.npz`` name in a folder that exists); checked before sending."""
    path = Path(path)
    if path.suffix != ".npz":
        raise TritongenError(f"--output-file {path} is not a .npz file", "name it OUT.npz")
    if path.is_dir() or not path.parent.is_dir():
        raise TritongenError(
            f"--output-file {path} cannot be written ({'a folder' if path.is_dir() else 'no such folder'})",
            "name a .npz file in a folder that exists",
        )
    return path


@dataclass(frozen=True)
class InferResult:
    outputs: dict[str, np.ndarray]
    check: CheckReport | None
    precision: str = "fp32"  # the served model's precision (an FP16/INT8 variant is checked against the guard's bar)
    stale: StaleServer | None = None  # a failed check against a server older than the build: why, and what to do
    uncompared: tuple[str, ...] = ()  # outputs served but not in --expected: the check says nothing of them

    def save(self, path: Path) -> Path:
        """Every output, whole, into the ``.npz`` file ``path`` (written through a new file renamed over it)."""
        from .files import replace_file
        from .npz import npz_bytes

        path = checked_output_file(path)
        try:
            replace_file(path, npz_bytes(self.outputs))
        except OSError as exc:
            raise TritongenError(
                f"--output-file {path} cannot be written ({exc.strerror or exc})", "name a file you may write"
            ) from None
        return path

    def text(self, values: int = 6) -> str:
        lines = []
        for name, array in self.outputs.items():
            flat = array.reshape(-1)[:values]
            shown = ", ".join(
                f"{v:.6g}"
                if array.dtype.kind == "f"
                else repr(v.decode("utf-8", "replace"))
                if isinstance(v, bytes)
                else str(v)
                for v in flat
            )
            more = ", ..." if array.size > values else ""
            # names and values are the server's: their control characters escaped (a terminal would obey them)
            lines.append(one_line(f"{name}: {array.dtype} {list(array.shape)} [{shown}{more}]"))
        if self.check is not None:
            if isinstance(self.check, ParityReport) and self.check.want == "original":
                lines.append("check against the original ONNX file's outputs saved by the build:")
            elif isinstance(self.check, ParityReport) and self.check.want == "expected":
                lines.append("check against the expected outputs given:")
            elif self.precision == "fp32":
                lines.append("check against the PyTorch reference saved by the build:")
            else:
                lines.append(
                    f"check of the {self.precision} variant against the FP32 reference saved by the build "
                    "(the accuracy guard's bar from the manifest):"
                )
            lines.append(self.check.table())
            lines.append("MATCH" if self.check.ok else "MISMATCH")
            if self.uncompared:
                lines.append(
                    f"not compared (not in --expected): {', '.join(one_line(n) for n in self.uncompared)}; the "
                    "verdict is of the outputs above only"
                )
            expected = isinstance(self.check, ParityReport) and self.check.want == "expected"
            if expected and not self.check.ok and self.precision != "fp32":
                lines.append(
                    f"note: this is the build's {self.precision} variant, compared with --atol/--rtol (1e-4/1e-3 "
                    "unless given, FP32's tolerances): --check compares it with the FP32 reference at the accuracy "
                    "guard's bar; or pass the tolerances the variant is meant to meet"
                )
        return "\n".join(lines)


def _clock(unix_s: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


def _built_at(model_dir: Path, version: int) -> float | None:
    """When ``version`` of ``model_dir`` was built: its manifest's time, else the newest mtime of its config and
    the version folder's files."""
    try:
        created = read_manifest(model_dir, version).created_unix_s
    except TritongenError:
        created = 0.0
    if created > 0:
        return created
    try:
        paths = [model_dir / "config.pbtxt", *(model_dir / str(version)).iterdir()]
        return max(p.stat().st_mtime for p in paths if p.exists())
    except (OSError, ValueError):
        return None


def with_served_repository(spec: InferSpec, url: str) -> InferSpec:
    """``spec`` reading its samples and references from the repository the local server at ``url`` serves, where
    ``spec``'s is the default one (``model_repository``) and does not hold the model (``infer NAME --check`` from
    another folder than serve's said "no build of model NAME in model_repository")."""
    return dataclasses.replace(spec, repo=served_repository(spec.repo, spec.name, url))


def stale_server(url: str, repo: Path, name: str, version: int) -> StaleServer | None:
    """Where the tritonserver at ``url`` runs on this machine (found by the port it listens on), serves ``repo``
    (one of its repositories) and started before ``version`` of ``name`` was built: the cause, and the fix for its
    model-control mode (with none, Triton never reads a model's files again). None otherwise, or where any of it
    cannot be read."""
    found = local_server(url)
    if found is None:
        return None
    started, options, repos = found
    source = None
    if repos:  # none named (a command line cut short): assume it serves this one
        try:
            ours = [src for served, src in repos if served.resolve() == Path(repo).resolve()]
        except OSError:
            return None
        if not ours:
            return None  # it serves other repositories: this build is not what it answers from
        source = ours[0]
    built = _built_at(Path(repo) / name, version)
    if built is None or built <= started:
        return None
    cause = f"model {name} was rebuilt at {_clock(built)} after the server started at {_clock(started)}"
    from .server.ports import last_option

    mode = last_option(options, "--model-control-mode", "none")
    if mode == "poll" and source is not None:
        return StaleServer(
            f"{cause} (serve polls {repo} and checks each change)", "check again once serve says it checked the change"
        )
    if mode == "poll":
        return StaleServer(f"{cause} (it polls {repo})", "check again once its log says it loaded the model again")
    if source is not None:  # a load from the server's own repository would read the copy made at its start
        return StaleServer(
            f"{cause} and still serves the copy of the repository it checked at its start",
            "restart serve (or serve with --model-control poll, or build with --new-version and tritongen rollout)",
        )
    if mode == "explicit":
        return StaleServer(cause, "load the model again (the server's model-control API), or restart serve")
    return StaleServer(
        f"{cause} and still serves the files it loaded then",
        "restart serve (or serve with --model-control poll, or build with --new-version)",
    )


def served_version(spec: InferSpec, url: str) -> int:
    """The version whose saved samples and reference ``infer`` uses: ``--model-version``, else the highest version
    the server has ready (after a rollback or a ``build --new-version`` the server loaded no newer one, and the
    newest folder on disk is not what answers), else the newest built one."""
    try:
        _, newest = saved_artifacts_dir(spec.repo, spec.name)  # no build of it here: said before any request
    except TritongenError:
        _refuse_a_typo(spec, url)
        raise
    if spec.model_version is not None:
        return spec.model_version
    from .client import model_metadata

    if len(version_numbers(Path(spec.repo) / spec.name)) == 1:
        return newest  # one build: nothing to choose (checks that need no server are made before any request)

    versions = model_metadata(url, spec.name, spec.protocol, spec.timeout_s)["versions"]
    # a version that is no int64 number is skipped (int() of 5000 digits was a traceback)
    ready = sorted(n for v in versions if (n := version_from_api(v)) is not None)
    return ready[-1] if ready else newest


def _refuse_a_typo(spec: InferSpec, url: str) -> None:
    """Where ``spec.repo`` holds no model ``spec.name`` and the server serves one of a name close to it: that name
    (``infer doubel`` from a folder without the build said "no build of model 'doubel' in model_repository")."""
    from .client import served_model_names
    from .names import did_you_mean

    if (Path(spec.repo) / spec.name).exists():
        return
    names = served_model_names(url, spec.protocol, min(spec.timeout_s, 5))
    hint = did_you_mean(spec.name, names) if spec.name not in names else ""
    if hint:
        raise TritongenError(
            f"no build of model '{spec.name}' in {spec.repo}, and the server at {url} serves no model '{spec.name}'",
            f"{hint} check the model's name",
        )


def saved_artifacts_dir(repo: Path, name: str) -> tuple[Path, int]:
    """The newest version's artifact folder of model ``name`` (see :func:`tritongen.layout.latest_artifacts`)."""
    return latest_artifacts(repo, name)


def ensemble_inputs_from_files(texts: tuple[str, ...] = (), images: tuple[Path, ...] = ()) -> dict[str, np.ndarray]:
    """``TEXT`` / ``IMAGE`` arrays (TYPE_STRING, shape [n, 1]) for the ensembles ``tritongen build`` generates."""
    from .pre_post import IMAGE_INPUT, TEXT_INPUT

    if texts and images:
        raise TritongenError("both --text and --image given", "send texts to a text model and images to an image model")
    if any(not t.strip() for t in texts):
        raise TritongenError(
            "--text is empty", "pass the sentence to embed or classify, e.g. --text 'a short sentence'"
        )
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell's locale could not decode (a lone surrogate): no request
            raise TritongenError(
                f"--text {one_line(text)[:80]} is not valid UTF-8 text", "pass UTF-8 text (check the terminal's locale)"
            ) from None
    if texts:
        return {TEXT_INPUT: np.array([[t.encode("utf-8")] for t in texts], dtype=object)}
    from .hf import MAX_IMAGE_FILE_BYTES  # what the served pre-processing step takes: refused here, not after sending

    data = []
    for path in images:
        try:
            data.append([regular_bytes(path, MAX_IMAGE_FILE_BYTES)])
        except OSError as exc:
            raise TritongenError(f"image {path} {read_problem(exc)}", "pass an image file (JPEG, PNG)") from None
    return {IMAGE_INPUT: np.array(data, dtype=object)}


def _served_inputs(spec: InferSpec, url: str) -> list[str]:
    """The input names the served model ``spec.name`` takes, from the server's metadata."""
    from .client import model_metadata

    return [i["name"] for i in model_metadata(url, spec.name, spec.protocol, spec.timeout_s)["inputs"]]


def _check_takes(spec: InferSpec, url: str, inputs: Mapping[str, np.ndarray]) -> None:
    """A text sent to an image model (or the reverse) is named as such, before the server's generic refusal."""
    from .pre_post import IMAGE_INPUT, TEXT_INPUT

    (sent,) = inputs
    takes = _served_inputs(spec, url)
    if sent in takes:
        return
    option = {TEXT_INPUT: "--text", IMAGE_INPUT: "--image"}
    other = next((option[name] for name in takes if name in option), None)
    raise TritongenError(
        f"model '{spec.name}' takes {', '.join(takes) or 'no inputs'}, not {sent} ({option[sent]})",
        f"send it {other} instead" if other else "pass --input-file with its inputs (an .npz named by input)",
    )


def _check_against_served(
    spec: InferSpec, metadata: Mapping[str, Any], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The arrays given against the served model's inputs (names, datatypes, shapes, batch size), before sending:
    the server's refusal would name neither the file nor the inputs the model wants. Returned as sent: a scalar
    per item given as ``[batch]`` (the model's own shape) goes as ``[batch, 1]``."""
    from .perf.inputs import arrays_as_served, check_arrays_against_metadata, served_shapes

    source = str(spec.input_file) if spec.input_file is not None else "the arrays given"
    sent = arrays_as_served(inputs, served_shapes(metadata))
    check_arrays_against_metadata(sent, metadata, source)
    return sent


def _metadata(spec: InferSpec, url: str, version: str) -> dict[str, Any]:
    from .client import model_metadata

    return model_metadata(url, spec.name, spec.protocol, spec.timeout_s, version=version)


def _named_npy(
    spec: InferSpec, arrays: dict[str, np.ndarray] | None, single: bool, metadata: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """``spec.input_file``'s ``arrays``; a single ``.npy`` array (``single``, read as "input") goes to the model's
    one input, by the server's own name for it."""
    assert spec.input_file is not None and arrays is not None
    if not single:
        return arrays
    return _single_array_as(str(spec.input_file), arrays["input"], spec.name, metadata["inputs"], "input")


def _single_array_as(
    given: str, array: np.ndarray, model: str, tensors: list[Mapping[str, Any]], kind: str
) -> dict[str, np.ndarray]:
    """A single ``.npy`` array (``given``) as the model's one input or output (``kind``), by its served name."""
    names = [str(t["name"]) for t in tensors]
    if len(names) != 1:
        raise TritongenError(
            f"{given} holds one array, and model '{model}' {'takes' if kind == 'input' else 'gives'} {len(names)} "
            f"{kind}s ({', '.join(map(one_line, names))})",
            f"pass an .npz with one array per {kind}, named by {kind} (numpy.savez(path, NAME=array, ...))",
        )
    return {names[0]: array}


def _check_expected(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``--expected``'s arrays hold what an output can be: numbers, booleans or text (not records, dates)."""
    if not arrays:
        raise TritongenError(f"--expected {path} holds no arrays", "save one array per output you expect, by its name")
    for name, array in arrays.items():
        if array.dtype.kind not in "biufcSU":
            raise TritongenError(
                f"--expected {path} holds '{one_line(name)[:80]}' as {array.dtype.str} values, which no output holds",
                "save each expected output as numbers, booleans or text (bytes)",
            )


def _is_sequence_model(model_dir: Path) -> bool:
    from .validate import config_from_file

    config_path = model_dir / "config.pbtxt"
    try:
        return config_path.is_file() and config_from_file(config_path).HasField("sequence_batching")
    except TritongenError:
        return False


def _is_ensemble(model_dir: Path, version: int) -> bool:
    try:
        return read_manifest(model_dir, version).kind == ENSEMBLE
    except TritongenError:
        return False


def sequence_from_file(spec: InferSpec) -> InferResult:
    """``spec.input_file`` streamed to a stateful model as one sequence; outputs stacked per chunk."""
    from .client import infer_sequence_from_chunks
    from .dtypes import numpy_dtype
    from .infer_sequence import arrays_from_stream_file, chunks_from_arrays, stacked
    from .validate import config_from_file, config_pb2

    if spec.input_file is None or spec.check or spec.texts or spec.images:
        raise TritongenError(
            "--sequence streams a file", "pass --input-file (a .wav, .npy or .npz) without --check/--text/--image"
        )
    config_path = Path(spec.repo) / spec.name / "config.pbtxt"
    if not config_path.is_file():
        raise TritongenError(f"model '{spec.name}' has no config in {spec.repo}", "pass --repo with the model")
    config = config_from_file(config_path)
    if not config.HasField("sequence_batching"):
        raise TritongenError(
            f"model '{spec.name}' is not a sequence model", "drop --sequence, or build it with --state"
        )
    names = [t.name for t in config.input]
    dtypes = {t.name: numpy_dtype(config_pb2().DataType.Name(t.data_type)) for t in config.input}
    arrays = arrays_from_stream_file(
        spec.input_file, names, _built_consts(Path(spec.repo) / spec.name, spec.model_version)
    )
    unknown = sorted(set(arrays) - set(names))
    if unknown or set(names) - set(arrays):
        raise TritongenError(
            f"the stream's arrays ({', '.join(sorted(arrays))}) are not the model's inputs ({', '.join(names)})",
            "name the .npz arrays after the inputs",
        )
    dims = {t.name: list(t.dims) for t in config.input}  # as clients send them (a reshape is Triton's)
    chunks = chunks_from_arrays(arrays, spec.chunk_size, dtypes, dims)
    url = spec.url or default_url(spec.protocol)
    answers = infer_sequence_from_chunks(
        url,
        spec.name,
        chunks,
        spec.sequence_id,
        protocol=spec.protocol,
        timeout_s=spec.timeout_s,
        model_version=str(spec.model_version) if spec.model_version is not None else "",
    )
    return InferResult(outputs=stacked(answers), check=None)


@dataclass(frozen=True)
class VariantBar:
    """The accuracy guard's bar that an FP16/INT8 variant passed at build time (from its manifest)."""

    precision: str
    min_cosine: float
    min_top1: float | None
    max_abs_error: tuple[tuple[str, float], ...] = ()  # given bars: these outputs are judged by error alone
    row_error_bars: tuple[tuple[str, float], ...] = ()  # the other outputs' resolved bars, as the guard applied them


def variant_bar(precision_record: Any) -> VariantBar | None:
    """The bar of the guard that passed an FP16/INT8 variant; None for FP32.

    ``precision_record`` is the manifest's ``precision`` field as ``tritongen build`` writes it.
    """
    if not isinstance(precision_record, dict) or precision_record.get("precision", "fp32") == "fp32":
        return None
    accuracy = precision_record.get("accuracy")
    top1 = accuracy.get("min_top1") if isinstance(accuracy, dict) else None
    if (
        not isinstance(accuracy, dict)
        or not finite_number(accuracy.get("min_cosine"))
        or not (top1 is None or finite_number(top1))
    ):
        raise TritongenError(
            f"the manifest records a {precision_record.get('precision')} variant without the accuracy guard's bar",
            "rebuild the model with tritongen build --precision",
        )
    return VariantBar(
        str(precision_record["precision"]),
        float(accuracy["min_cosine"]),
        None if top1 is None else float(top1),
        _bars(accuracy.get("max_abs_error")),
        _bars(accuracy.get("row_error_bars")),  # absent before these bars: computed from the reference
    )


def _bars(recorded: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(recorded, dict):
        return ()
    return tuple((str(k), float(v)) for k, v in recorded.items() if finite_number(v))


def _in_reference_shapes(
    outputs: dict[str, np.ndarray], reference: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """``outputs`` with every output served as ``[batch, 1]`` (a scalar per item: Triton's empty reshape) where the
    reference is ``[batch]``, in the reference's shape: compared as the model computes it (a [batch, 1] array is
    judged row by row by the precision checks, which turns each cosine into a sign check)."""
    if not reference:
        return outputs
    return {
        n: a.reshape(reference[n].shape) if n in reference and a.shape == (*reference[n].shape, 1) else a
        for n, a in outputs.items()
    }


def _variant_check(bar: VariantBar, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> AccuracyReport:
    names = list(reference)
    missing = [n for n in names if n not in outputs]
    if missing:
        raise TritongenError(
            f"the server returned no output '{missing[0]}'", "rebuild the model: config and reference disagree"
        )
    return accuracy_from_outputs(
        names,
        [[outputs[n] for n in names]],
        [[reference[n] for n in names]],
        bar.min_cosine,
        bar.min_top1,
        max_abs_error=dict(bar.max_abs_error),
        row_error_bars=dict(bar.row_error_bars),
    )


def infer_model(spec: InferSpec) -> InferResult:
    from .client import infer_from_arrays

    spec = with_served_repository(spec, spec.url or default_url(spec.protocol))
    if spec.sequence:
        if spec.expected is not None:
            raise TritongenError("--expected is not compared with --sequence", "leave out one of them")
        return sequence_from_file(spec)
    from .end_to_end import END_TO_END_NAME, compare_end_to_end, read_reference, step_precision

    reference = None
    end_to_end = None
    bar = None
    tolerances = (1e-4, 1e-3)
    reference_of = "torch"  # what the saved reference is: PyTorch's outputs, or an ONNX file's ("original")
    url = spec.url or default_url(spec.protocol)
    pinned = str(spec.model_version) if spec.model_version is not None else ""
    checked_version: int | None = None  # the version whose saved samples are sent
    if spec.expected is not None and spec.input_file is None and spec.inputs is None:
        raise TritongenError(
            "--expected holds the outputs of --input-file's inputs, and no --input-file is given",
            "pass --input-file with the inputs those outputs answer (--check compares the build's own samples)",
        )
    if spec.texts or spec.images:
        if spec.check or spec.input_file is not None:
            raise TritongenError(
                "--text/--image cannot be combined with --check or --input-file", "send texts/images on their own"
            )
        inputs = ensemble_inputs_from_files(spec.texts, spec.images)
        _check_takes(spec, url, inputs)
    elif spec.input_file is not None or spec.inputs is not None:
        if spec.check:
            given = "--input-file" if spec.input_file is not None else "inputs"
            raise TritongenError(
                "--check compares against the build's saved samples", f"drop {given} to send those samples"
            )
        if spec.input_file is not None and spec.inputs is not None:
            raise TritongenError("both input_file and inputs are given", "pass one of them")
        expected_single = False
        if spec.expected is not None:  # read before anything is sent, as the inputs are
            reference, expected_single = arrays_and_form_from_npz(spec.expected)
            reference_of, tolerances = "expected", (spec.atol, spec.rtol)
            _check_expected(spec.expected, reference)
        read, single = (None, False) if spec.input_file is None else arrays_and_form_from_npz(spec.input_file)
        # asked once: the version the request goes to (None: the server's pick)
        metadata = _metadata(spec, url, str(spec.model_version) if spec.model_version is not None else "")
        inputs = dict(spec.inputs) if spec.inputs is not None else _named_npy(spec, read, single, metadata)
        inputs = _check_against_served(spec, metadata, inputs)
        if reference is not None and expected_single:
            reference = _single_array_as(
                f"--expected {spec.expected}", reference["input"], spec.name, metadata.get("outputs", []), "output"
            )
    else:
        version = served_version(spec, url)
        checked_version = version
        pinned = str(version)
        artifacts = artifact_dir(Path(spec.repo) / spec.name, version)
        if not artifacts.is_dir():
            raise TritongenError(
                f"the build of version {version} of model '{spec.name}' is not in {spec.repo}",
                "pass --repo with the repository the server loads, or --model-version with a version built there",
            )
        if (artifacts / END_TO_END_NAME).is_file():  # a text ensemble: the build's sentences, end to end
            texts, saved = read_reference(artifacts / END_TO_END_NAME)
            inputs = ensemble_inputs_from_files(tuple(texts))
            if spec.check:
                end_to_end = saved
                manifest = read_manifest(Path(spec.repo) / spec.name, version)
                tolerances = manifest.tolerances("model")
                precision = step_precision(manifest)
                if precision != "fp32":  # the saved end-to-end answers are FP32 PyTorch's, labels included
                    raise TritongenError(
                        f"ensemble '{spec.name}' serves an {precision} model step, and its end-to-end reference is "
                        "FP32 PyTorch's (parity tolerances, exact labels)",
                        f"check the model step against the accuracy guard's bar: tritongen infer {spec.name}_model "
                        "--check",
                    )
        elif not (artifacts / SAMPLES_NAME).is_file():
            if spec.check and _is_ensemble(Path(spec.repo) / spec.name, version):
                raise TritongenError(
                    f"ensemble '{spec.name}' has no end-to-end reference (its steps take images or "
                    "run your own code, which the build does not run)",
                    f"check its model step with tritongen infer {spec.name}_model --check, or send "
                    "--text/--image and look at the answers",
                )
            raise TritongenError(
                f"model '{spec.name}' has no saved samples in {artifacts}", "pass --input-file with inputs"
            )
        else:
            inputs = arrays_from_npz(artifacts / SAMPLES_NAME)
            if any(a.ndim == 1 for a in inputs.values()):  # a scalar per item, saved as the model reads it: [batch]
                from .perf.inputs import arrays_as_served, served_shapes

                inputs = arrays_as_served(inputs, served_shapes(_metadata(spec, url, pinned)))
        if spec.check and end_to_end is None:
            reference = arrays_from_npz(artifacts / REFERENCE_NAME)
            manifest = read_manifest(Path(spec.repo) / spec.name, version)
            tolerances = manifest.tolerances()
            # an ONNX file's build saved the original graph's outputs as the reference, not PyTorch's
            reference_of = "original" if manifest.spec_record().get("inputs_from") == "onnx" else "torch"
            bar = variant_bar(manifest.precision_record)
    if _is_sequence_model(Path(spec.repo) / spec.name):
        # The sequence batcher takes batch 1: each row goes as a sequence of one request, from zero state.
        from .client import infer_sequence_from_chunks
        from .infer_sequence import stacked

        rows = len(next(iter(inputs.values())))
        answers = [
            infer_sequence_from_chunks(
                url,
                spec.name,
                [{n: a[i : i + 1] for n, a in inputs.items()}],
                spec.sequence_id + i,
                protocol=spec.protocol,
                timeout_s=spec.timeout_s,
                model_version=pinned,
            )[0]
            for i in range(rows)
        ]
        outputs = stacked(answers)
    else:
        outputs = infer_from_arrays(
            url, spec.name, inputs, protocol=spec.protocol, timeout_s=spec.timeout_s, model_version=pinned
        )
    report: CheckReport | None = None
    # a scalar per item is served with Triton's empty reshape, as [batch, 1]: compared in the model's [batch]
    compared = _in_reference_shapes(outputs, end_to_end if end_to_end is not None else reference)
    if end_to_end is not None:
        report = ParityReport(
            atol=tolerances[0],
            rtol=tolerances[1],
            results=tuple(compare_end_to_end(compared, end_to_end, *tolerances)),
            got="served",
        )
    if reference is not None and bar is not None:
        report = _variant_check(bar, compared, reference)
    elif reference is not None:
        results = []
        for name, want in reference.items():
            if name not in compared:
                if reference_of == "expected":
                    raise TritongenError(
                        f"--expected {spec.expected} holds '{one_line(name)}', which is no output of model "
                        f"'{spec.name}' ({', '.join(map(one_line, compared))})",
                        "name the arrays of --expected after the model's outputs",
                    )
                raise TritongenError(
                    f"the server returned no output '{name}'", "rebuild the model: config and reference disagree"
                )
            results.append(
                compare_arrays("served", name, compared[name], want, *tolerances, equal_nan=reference_of == "expected")
            )
        report = ParityReport(
            atol=tolerances[0], rtol=tolerances[1], results=tuple(results), got="served", want=reference_of
        )
    stale = None
    if report is not None and not report.ok and checked_version is not None:
        stale = stale_server(url, Path(spec.repo), spec.name, checked_version)
    precision = bar.precision if bar else "fp32"
    if reference_of == "expected" and report is not None and not report.ok:  # the tolerances may be the wrong bar
        precision = _built_precision(Path(spec.repo) / spec.name, spec.model_version)
    uncompared = tuple(n for n in outputs if n not in reference) if reference_of == "expected" and reference else ()
    return InferResult(outputs=outputs, check=report, precision=precision, stale=stale, uncompared=uncompared)


def _built_manifest(model_dir: Path, version: int | None = None) -> Manifest | None:
    """The manifest of ``version`` (default: the newest) of ``model_dir``; None where none is readable."""
    versions = [version] if version is not None else version_numbers(model_dir)[-1:]
    try:
        return read_manifest(model_dir, versions[-1]) if versions else None
    except TritongenError:
        return None


def _built_details(model_dir: Path, version: int | None = None) -> dict[str, Any]:
    """The manifest details of ``version`` (default: the newest) of ``model_dir``; empty where no manifest says."""
    manifest = _built_manifest(model_dir, version)
    details = manifest.details if manifest is not None else {}
    return details if isinstance(details, dict) else {}


def _built_consts(model_dir: Path, version: int | None = None) -> dict[str, Any]:
    """The ``--const`` values ``version`` (default: the newest) was built with (empty where no manifest says)."""
    export = _built_details(model_dir, version).get("export")
    consts = export.get("consts") if isinstance(export, dict) else None
    return dict(consts) if isinstance(consts, dict) else {}


def _built_precision(model_dir: Path, version: int | None = None) -> str:
    """The precision ``version`` (default: the newest) was built at (fp32 where no manifest says)."""
    manifest = _built_manifest(model_dir, version)
    return manifest.precision if manifest is not None else "fp32"
