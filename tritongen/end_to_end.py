"""End-to-end reference for text ensembles: texts in, what the whole pipeline should answer.

The build already has PyTorch's outputs of the model step for real tokenized sentences (the parity gate's
samples). Post-processing those outputs with a reference implementation written here (NumPy, independent of the
generated Python-backend step) gives what the served ensemble must return for the same sentences:
``tritongen infer NAME --check`` sends the sentences as text and compares. That proves the tokenizer step, the
served model and the post-processing step together, through the real server.

The reference is ``<ensemble>/<version>/tritongen/end_to_end.json``: ``{"format", "inputs": {"TEXT": [...]},
"outputs": {name: {"dtype", "shape", "data"}}}``, listed in the ensemble's manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TritongenError
from .files import json_file
from .layout import CONFIG_NAME, REFERENCE_NAME, SAMPLES_NAME, artifact_dir, version_numbers
from .parity import OutputParity, compare_arrays
from .pre_post import EMBEDDING_OUTPUT, LABELS_OUTPUT, SCORES_OUTPUT, TEXT_INPUT

END_TO_END_NAME = "end_to_end.json"
FORMAT = "tritongen-end-to-end/1"
MAX_BYTES = 8 << 20  # a handful of sentences and their outputs: far below this
MAX_DIMS = 32  # numpy's limit on an array's dimensions (1.x)
MAX_FLOAT_INT = 2**1023  # an integer in the data converts to float64 below this (float(2**1024) overflows)


def postprocessed(
    kind: str, outputs: Mapping[str, np.ndarray], mask: np.ndarray | None, labels: Sequence[str], top_k: int
) -> dict[str, np.ndarray]:
    """What a built-in post-processing ``kind`` returns for the model's ``outputs`` (first output used)."""
    first = np.asarray(next(iter(outputs.values())), dtype=np.float64)
    if kind == "mean_pool_normalize":
        if mask is None:
            raise TritongenError("mean pooling needs the attention mask", "report this as a bug")
        weights = np.asarray(mask, dtype=np.float64)[:, :, None]
        return {
            EMBEDDING_OUTPUT: _unit(np.einsum("bsh,bsx->bh", first, weights) / np.maximum(weights.sum(axis=1), 1e-9))
        }
    if kind == "normalize":
        return {EMBEDDING_OUTPUT: _unit(first)}
    if kind == "softmax_topk":
        exp = np.exp(first - first.max(axis=-1, keepdims=True))
        probs = exp / exp.sum(axis=-1, keepdims=True)
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
        return {
            LABELS_OUTPUT: np.array([[labels[i] for i in row] for row in order], dtype=object),
            SCORES_OUTPUT: np.take_along_axis(probs, order, axis=-1),
        }
    raise TritongenError(f"no end-to-end reference for post-processing '{kind}'", "report this as a bug")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def write_reference(path: Path, texts: Sequence[str], outputs: Mapping[str, np.ndarray]) -> Path:
    data: dict[str, Any] = {"format": FORMAT, "inputs": {TEXT_INPUT: list(texts)}, "outputs": {}}
    for name, array in outputs.items():
        if array.dtype == object:
            data["outputs"][name] = {"dtype": "STRING", "shape": list(array.shape), "data": array.reshape(-1).tolist()}
        else:
            data["outputs"][name] = {
                "dtype": "FP64",
                "shape": list(array.shape),
                "data": np.asarray(array, np.float64).reshape(-1).tolist(),
            }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) + "\n")
    return path


def _encodable(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (JSON can carry a lone surrogate; a request cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_float64(value: Any) -> bool:
    """A JSON number a float64 holds (NaN and infinities included: what json.dumps writes for them); an integer
    past a float's range is not."""
    if isinstance(value, float):
        return True
    return type(value) is int and abs(value) <= MAX_FLOAT_INT


def step_precision(manifest: Any) -> str:
    """The precision of an ensemble's model step as its manifest records it (``fp32`` where none). The end-to-end
    reference is FP32 PyTorch's (parity tolerances, exact labels): it checks an ensemble end to end only where that
    step is FP32; another is checked alone, against the accuracy guard's bar (``infer NAME_model --check``)."""
    return str(manifest.spec_record("model").get("precision", "fp32"))


def checkable(model_dir: Path) -> bool:
    """Whether ``infer --check`` checks the model of ``model_dir`` as its newest build left it: a readable manifest
    (``infer`` reads its tolerances) and saved samples with their reference, or, for an ensemble, an end-to-end
    reference with an FP32 model step (:func:`step_precision`). The one answer the next steps ``serve`` prints and
    the deploy bundle's README give."""
    from .manifest import read_manifest

    versions = version_numbers(model_dir)
    if not versions or not (model_dir / CONFIG_NAME).is_file():
        return False
    artifacts = artifact_dir(model_dir, versions[-1])
    ensemble = (artifacts / END_TO_END_NAME).is_file()
    try:
        manifest = read_manifest(model_dir, versions[-1])
        manifest.tolerances(*(("model",) if ensemble else ()))  # what infer --check holds the answers to
    except TritongenError:
        return False
    if ensemble:
        return step_precision(manifest) == "fp32"
    return (artifacts / SAMPLES_NAME).is_file() and (artifacts / REFERENCE_NAME).is_file()


def check_target(model_dir: Path) -> str | None:
    """The model ``infer --check`` checks for the entry point ``model_dir``: itself where :func:`checkable`, an
    ensemble's model step (``NAME_model``) where the ensemble's end-to-end reference is not for it (another precision
    than FP32) and the step is checkable, else None."""
    if checkable(model_dir):
        return model_dir.name
    from .manifest import read_manifest

    step = model_dir.parent / f"{model_dir.name}_model"
    versions = version_numbers(model_dir)
    if not versions or not (artifact_dir(model_dir, versions[-1]) / END_TO_END_NAME).is_file():
        return None
    try:  # an ensemble whose manifest cannot be read names no step either
        read_manifest(model_dir, versions[-1])
    except TritongenError:
        return None
    return step.name if checkable(step) else None


def read_reference(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(texts, outputs)`` from a reference file, checked for shape and type before anything is built."""
    bad = TritongenError(
        f"end-to-end reference {path} is damaged", "rebuild the ensemble (tritongen build ... --force)"
    )
    try:
        data = json_file(path, MAX_BYTES)
    except (OSError, ValueError):
        raise bad from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("outputs"), dict):
        raise bad
    texts = data.get("inputs", {}).get(TEXT_INPUT) if isinstance(data.get("inputs"), dict) else None
    if (
        not isinstance(texts, list)
        or not texts
        or not all(isinstance(t, str) and _encodable(t) and t.strip() for t in texts)  # a blank one: no sentence
        or not data["outputs"]  # nothing to compare: --check said MATCH having compared nothing
    ):
        raise bad
    outputs = {}
    for name, entry in data["outputs"].items():
        if not isinstance(entry, dict) or entry.get("dtype") not in ("STRING", "FP64"):
            raise bad
        shape, values = entry.get("shape"), entry.get("data")
        # counted with Python ints: np.prod in int64 wraps (2**32 x 2**32 is 0) and a reshape then fails
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(type(d) is int and 0 <= d for d in shape)
            or math.prod(max(d, 1) for d in shape) > MAX_BYTES  # a zero among huge dims: still no array numpy makes
            or not isinstance(values, list)
            or len(values) != math.prod(shape)
        ):
            raise bad
        if entry["dtype"] == "STRING":
            if not all(isinstance(v, str) for v in values) or len(shape) != 2:  # labels: [texts, k]
                raise bad
            outputs[name] = np.array(values, dtype=object).reshape(shape)
        else:
            if not all(_is_float64(v) for v in values):
                raise bad
            outputs[name] = np.array(values, dtype=np.float64).reshape(shape)
    labels, scores = outputs.get(LABELS_OUTPUT), outputs.get(SCORES_OUTPUT)
    # label ties are read from the scores beside them: the same [texts, k] of numbers, or none at all
    if scores is not None and (scores.dtype == object or (labels is not None and scores.shape != labels.shape)):
        raise bad
    if any(len(array) != len(texts) for array in outputs.values() if array.ndim):  # a row per text
        raise bad
    return texts, outputs


def compare_end_to_end(
    served: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], atol: float, rtol: float
) -> list[OutputParity]:
    """Numbers by the allclose rule; labels exactly, except where two labels' reference scores tie within atol."""
    results = []
    scores = reference.get(SCORES_OUTPUT)
    for name, want in reference.items():
        if name not in served:
            raise TritongenError(
                f"the server returned no output '{name}'", "rebuild the ensemble: config and reference disagree"
            )
        got = served[name]
        if want.dtype != object:
            results.append(compare_arrays("end to end", name, got, want, atol, rtol))
            continue
        got_text = np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), otypes=[object]
        )(got)
        if got_text.shape != want.shape:
            results.append(
                OutputParity(
                    "end to end",
                    name,
                    tuple(want.shape),
                    float("inf"),
                    float("inf"),
                    False,
                    f"shape {list(got_text.shape)} != {list(want.shape)}",
                )
            )
            continue
        differ = 0
        for row, col in zip(*np.nonzero(got_text != want)):
            tie = scores is not None and any(
                want[row, j] == got_text[row, col] and abs(scores[row, j] - scores[row, col]) <= atol
                for j in range(want.shape[1])
            )
            differ += 0 if tie else 1
        results.append(
            OutputParity(
                "end to end",
                name,
                tuple(want.shape),
                float(differ),
                0.0,
                differ == 0,
                f"{differ} label(s) differ" if differ else "",
            )
        )
    return results
