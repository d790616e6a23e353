"""The precision step of ``tritongen build``: after the FP32 parity gate, make the guarded FP16/INT8 variant.

The FP32 ONNX stays the export's parity reference; the guard measures the variant against PyTorch's FP32
outputs on samples calibration did not see (the held-out quarter of ``--calib-data``, or for FP16 without
``--calib-data`` the build's own parity samples). The variant then replaces ``model.onnx`` in the version
folder, so the repository serves exactly the file whose accuracy the manifest records.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TritongenError
from ..export import ONNX_DATA_FILENAME, ONNX_FILENAME
from .calibration import calibration_data_from_arrays, calibration_data_from_path
from .guard import GuardResult, guarded_onnx_from_onnx

CALIB_BATCH = 16


def check_ids_within_tables(bounds: Mapping[str, int], batches: Sequence[Mapping[str, np.ndarray]], where: str) -> None:
    """Refuse integer inputs in ``batches`` that index a table (``bounds``: its rows, from
    :func:`tritongen.index_inputs.index_bounds_from_onnx`) with an id outside it: ONNX Runtime's Gather stops with a
    traceback on one past the end, and takes a negative one from the end (PyTorch refuses it), so calibration would
    measure what the model never computes."""
    for name, rows in bounds.items():
        for batch in batches:
            if name not in batch:
                continue
            ids = np.asarray(batch[name])
            bad = ids[(ids < 0) | (ids >= rows)] if ids.size else ids
            if bad.size:
                raise TritongenError(
                    f"{where} holds the id {int(bad.flat[0])} in input '{name}', outside the {rows} rows of the table "
                    f"it indexes (0 to {rows - 1})",
                    "give ids the model's own tokenizer or vocabulary gives (the table is the model's embedding)",
                )


def check_references_differ(names: Sequence[str], reference: Sequence[Sequence[Any]], calib_data: Path) -> None:
    """Refuse held-out samples on which the FP32 model answers one and the same thing in every output (every
    attention mask 0, all padding): the guard would compare constants and pass any variant, however far it answers
    on real inputs. One output constant by design (a validity flag) beside others that vary is compared like them.
    Refuse, too, a reference that is NaN or Inf: the variant would be blamed for the FP32 model's answer. Rows may
    differ in shape (samples of several lengths): they then differ."""
    constant: list[tuple[str, int]] = []
    judged = 0
    for i, name in enumerate(names):
        rows = [row for batch in reference if batch[i] is not None for row in _rows(batch[i])]
        if len(rows) < 2 or not all(np.issubdtype(r.dtype, np.number) for r in rows):
            continue
        judged += 1
        if any(np.issubdtype(r.dtype, np.inexact) and not np.all(np.isfinite(r)) for r in rows):
            raise TritongenError(
                f"the FP32 model answers NaN or Inf in '{name}' on held-out samples of --calib-data {calib_data}: "
                "the accuracy guard cannot compare a variant with that",
                "pass calibration data in the range the model takes (its own FP32 answers must be finite)",
            )
        first = rows[0]
        if all(r.shape == first.shape and np.array_equal(r, first) for r in rows[1:]):
            constant.append((name, len(rows)))
    if judged and len(constant) == judged:
        name, count = constant[0]
        raise TritongenError(
            f"the FP32 model answers every held-out sample of --calib-data {calib_data} with the same '{name}' "
            f"({count} rows)"
            + (", and so in every other output" if judged > 1 else "")
            + ": the accuracy guard would compare constants and pass any variant",
            "pass calibration data the model answers differently (real inputs; not all padding, nor masks of 0)",
        )


def _rows(batch: Any) -> list[np.ndarray]:
    """A batch's rows (its first axis); none for a 0-d answer."""
    array = np.asarray(batch)
    return list(array) if array.ndim else []


def precision_from_build(
    fp32_onnx: Path,
    spec: Any,
    module: Any,
    parity_samples,
    work: Path,
    progress: Callable[[str], None] | None = None,
    index_bounds: Mapping[str, int] | None = None,
) -> GuardResult:
    """The variant ``spec.precision`` asks for, behind the accuracy guard. ``index_bounds``: the rows of the table
    each integer input indexes (read from ``fp32_onnx`` where not given)."""
    from ..export import torch_outputs_from_module

    say = progress or (lambda message: None)
    outputs = [t.name for t in spec.outputs]
    unknown = [name for name, _ in spec.max_abs_error if name not in outputs]
    if unknown:  # names given with --output were checked by the spec; the exported ones are known only now
        raise TritongenError(
            f"--max-abs-error names '{unknown[0]}', which is not an output of the model ({', '.join(outputs)})",
            f"name one of its outputs, e.g. --max-abs-error {outputs[0]}=0.05",
        )
    batch = max(1, min(CALIB_BATCH, spec.max_batch_size)) if spec.batched else 1
    if spec.calib_data is not None:
        tokenizer = spec.tokenizer or (spec.model_path if spec.model_path.is_dir() else None)
        data = calibration_data_from_path(
            spec.calib_data, spec.inputs, spec.batched, batch, tokenizer=tokenizer, holdout=spec.precision == "int8"
        )
        if index_bounds is None:
            from ..index_inputs import index_bounds_from_onnx

            index_bounds = index_bounds_from_onnx(fp32_onnx, [t.name for t in spec.inputs])
        check_ids_within_tables(index_bounds, [*data.calib, *data.eval], f"--calib-data {spec.calib_data}")
    else:
        data = calibration_data_from_arrays(
            [], [inputs for _, inputs in parity_samples], batched=spec.batched, source="build samples"
        )
    say(
        f"      {data.calib_samples} calibration sample(s), "
        f"{data.eval_samples} held out for the accuracy guard ({data.source})"
    )
    try:
        reference = [torch_outputs_from_module(module, spec, b) for b in data.eval]
    except TritongenError as err:
        if spec.calib_data is None:
            raise
        raise TritongenError(  # the build's own samples passed: the sizes are the file's, not --dim-range's
            f"--calib-data {spec.calib_data}: {err.problem}",
            "check its arrays against the model's inputs: names, dtypes, and sizes the model takes together "
            "(the inputs of one sample the same length where the model pairs them)",
        ) from None
    if spec.calib_data is not None:
        check_references_differ(outputs, reference, spec.calib_data)
    if spec.min_top1 is not None and not any(_has_classes(reference, i) for i in range(len(outputs))):
        raise TritongenError(  # found only after every attempt of the guard, with a fix about calibration data
            f"--min-top1 is set, but no output of the model is shaped [batch, classes] ({', '.join(outputs)}): "
            "top-1 agreement has nothing to compare",
            "leave --min-top1 out (the cosine bar, --min-cosine, judges these outputs)",
        )
    # the samples the build saves, which infer --check sends: held-out calibration rows (data like the guard's),
    # else the build's last parity samples (a text ensemble's sentences, --sample-inputs); the guard holds the
    # variant to its bar on them too, so that the build's own check agrees with its guard
    saves_heldout = not (spec.calib_data is None or spec.sample_inputs is not None or not data.eval or spec.states)
    if saves_heldout and spec.target == "tensorrt" and not _within_profile(spec, data.eval[0]):
        saves_heldout = False  # an engine refuses sizes past its profile: the build's samples stay
    check = None
    if saves_heldout:
        check = (data.eval[0], reference[0])
    elif not spec.states and parity_samples:  # a stateful model's check sends a sequence start, built later
        inputs = parity_samples[-1][1]
        check = (inputs, torch_outputs_from_module(module, spec, inputs))
    result = guarded_onnx_from_onnx(
        fp32_onnx,
        work,
        spec.precision,
        data,
        reference,
        [t.name for t in spec.outputs],
        min_cosine=spec.min_cosine,
        min_top1=spec.min_top1,
        method=spec.calib_method,
        progress=say,
        int8_form="cpu" if spec.target == "local" else "tensorrt",  # local: ONNX Runtime's CPU integer kernels
        max_abs_error=dict(spec.max_abs_error),
        check=check,
    )
    if not saves_heldout:
        return result  # real samples given (a text ensemble's sentences, --sample-inputs) stay the check's
    return dataclasses.replace(result, check_sample=(data.eval[0], reference[0]))


def _has_classes(reference: Sequence[Sequence[Any]], index: int) -> bool:
    """Whether output ``index`` is ``[batch, classes]`` in every reference batch (what top-1 agreement compares)."""
    shapes = [np.shape(batch[index]) for batch in reference if batch[index] is not None]
    return bool(shapes) and all(len(shape) == 2 and shape[1] > 1 for shape in shapes)


def _within_profile(spec: Any, arrays: Any) -> bool:
    """Every variable dimension of ``arrays`` within the sizes a TensorRT profile of ``spec`` takes (a range's MIN
    to MAX; a dimension without one from 1 to its MAX, :mod:`tritongen.engine`)."""
    from ..dim_ranges import ranges_from_spec

    offset = 1 if spec.batched else 0
    for r in ranges_from_spec(spec):
        size = arrays[r.input].shape[offset + r.axis]
        if not (r.min if r.explicit else 1) <= size <= r.max:
            return False
    return True


def move_onnx(src: Path, dst_dir: Path) -> Path:
    """Move ``src`` (model.onnx + model.onnx.data) into ``dst_dir``, replacing what is there."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in (ONNX_FILENAME, ONNX_DATA_FILENAME):
        target = dst_dir / name
        target.unlink(missing_ok=True)
        if (src.parent / name).exists():
            shutil.move(str(src.parent / name), str(target))
    return dst_dir / ONNX_FILENAME
