"""``tritongen infer``: send inputs to a served model and, with ``check``, compare against the build's reference.

By default the inputs are the samples the build saved (``<model>/<version>/tritongen/samples.npz``) and the
reference is the PyTorch output the build computed for them, so ``infer --check`` proves end to end that the
served model answers like the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TritongenError
from .layout import REFERENCE_NAME, SAMPLES_NAME, latest_artifacts
from .manifest import ENSEMBLE, read_manifest
from .npz import arrays_from_npz
from .parity import ParityReport, compare_arrays


@dataclass(frozen=True)
class InferSpec:
    name: str
    input_file: Path | None = None
    repo: Path = Path("model_repository")
    url: str | None = None
    protocol: str = "grpc"
    check: bool = False
    timeout_s: float = 60.0
    texts: tuple[str, ...] = ()  # sent as TEXT (TYPE_STRING) to a text-in ensemble
    images: tuple[Path, ...] = ()  # encoded image files, sent as IMAGE to an image-in ensemble
    # a stateful model: stream input_file in chunks as one sequence (tritongen.infer_sequence)
    sequence: bool = False
    chunk_size: int | None = None  # default: the first input's fixed size
    sequence_id: int = 1  # the sequence's correlation ID


@dataclass(frozen=True)
class InferResult:
    outputs: dict[str, np.ndarray]
    check: ParityReport | None

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
            lines.append(f"{name}: {array.dtype} {list(array.shape)} [{shown}{more}]")
        if self.check is not None:
            lines.append("check against the PyTorch reference saved by the build:")
            lines.append(self.check.table())
            lines.append("MATCH" if self.check.ok else "MISMATCH")
        return "\n".join(lines)


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
    if texts:
        return {TEXT_INPUT: np.array([[t.encode("utf-8")] for t in texts], dtype=object)}
    data = []
    for path in images:
        try:
            data.append([Path(path).read_bytes()])
        except OSError as exc:
            raise TritongenError(f"cannot read image {path} ({exc.strerror})", "pass an existing image file") from None
    return {IMAGE_INPUT: np.array(data, dtype=object)}


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
    from .client import default_url, infer_sequence_from_chunks
    from .dtypes import numpy_dtype
    from .infer_sequence import arrays_from_stream_file, chunks_from_arrays, default_chunk_size, stacked
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
    arrays = arrays_from_stream_file(spec.input_file, names)
    unknown = sorted(set(arrays) - set(names))
    if unknown or set(names) - set(arrays):
        raise TritongenError(
            f"the stream's arrays ({', '.join(sorted(arrays))}) are not the model's inputs ({', '.join(names)})",
            "name the .npz arrays after the inputs",
        )
    size = spec.chunk_size if spec.chunk_size is not None else default_chunk_size(config)
    chunks = chunks_from_arrays(arrays, size, dtypes)
    url = spec.url or default_url(spec.protocol)
    answers = infer_sequence_from_chunks(
        url, spec.name, chunks, spec.sequence_id, protocol=spec.protocol, timeout_s=spec.timeout_s
    )
    return InferResult(outputs=stacked(answers), check=None)


def infer_model(spec: InferSpec) -> InferResult:
    from .client import default_url, infer_from_arrays

    if spec.sequence:
        return sequence_from_file(spec)
    from .end_to_end import END_TO_END_NAME, compare_end_to_end, read_reference

    reference = None
    end_to_end = None
    tolerances = (1e-4, 1e-3)
    if spec.texts or spec.images:
        if spec.check or spec.input_file is not None:
            raise TritongenError(
                "--text/--image cannot be combined with --check or --input-file", "send texts/images on their own"
            )
        inputs = ensemble_inputs_from_files(spec.texts, spec.images)
    elif spec.input_file is not None:
        if spec.check:
            raise TritongenError(
                "--check compares against the build's saved samples", "drop --input-file to send those samples"
            )
        inputs = arrays_from_npz(spec.input_file)
    else:
        artifacts, version = saved_artifacts_dir(spec.repo, spec.name)
        if (artifacts / END_TO_END_NAME).is_file():  # a text ensemble: the build's sentences, end to end
            texts, saved = read_reference(artifacts / END_TO_END_NAME)
            inputs = ensemble_inputs_from_files(tuple(texts))
            if spec.check:
                end_to_end = saved
                model_spec = (
                    read_manifest(Path(spec.repo) / spec.name, version).details.get("model", {}).get("spec", {})
                )
                tolerances = (float(model_spec.get("atol", 1e-4)), float(model_spec.get("rtol", 1e-3)))
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
        if spec.check and end_to_end is None:
            reference = arrays_from_npz(artifacts / REFERENCE_NAME)
            manifest = read_manifest(Path(spec.repo) / spec.name, version)
            tolerances = (manifest.details["spec"]["atol"], manifest.details["spec"]["rtol"])
    url = spec.url or default_url(spec.protocol)
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
            )[0]
            for i in range(rows)
        ]
        outputs = stacked(answers)
    else:
        outputs = infer_from_arrays(url, spec.name, inputs, protocol=spec.protocol, timeout_s=spec.timeout_s)
    report = None
    if end_to_end is not None:
        report = ParityReport(
            atol=tolerances[0], rtol=tolerances[1], results=tuple(compare_end_to_end(outputs, end_to_end, *tolerances))
        )
    if reference is not None:
        results = []
        for name, want in reference.items():
            if name not in outputs:
                raise TritongenError(
                    f"the server returned no output '{name}'", "rebuild the model: config and reference disagree"
                )
            results.append(compare_arrays("served", name, outputs[name], want, *tolerances))
        report = ParityReport(atol=tolerances[0], rtol=tolerances[1], results=tuple(results))
    return InferResult(outputs=outputs, check=report)
