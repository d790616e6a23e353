"""``tritongen build``: PyTorch model file -> validated Triton model folder, one stage after another.

Stages (each in its own module): load (``load``), samples (``samples``), ONNX export and clean-up
(``export``), parity gate (``parity``), config and files (``config``), manifest (``manifest``), offline
validation (``validate``) and the atomic move into the repository (``repository``).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import batching_text, config_text_from_spec, warmup_files
from .config_changes import check_shared_config
from .errors import TritongenError
from .layout import (
    ARTIFACT_DIR,
    CONFIG_NAME,
    ENGINE_PLAN_NAME,
    LABELS_FILENAME,
    PREPARED_ONNX,
    REFERENCE_NAME,
    SAMPLES_NAME,
    TOKENIZED_SAMPLES_NAME,
    WARMUP_DIR,
    is_tuned_config,
)
from .load.common import LoadedModel
from .manifest import file_hashes, new_manifest, write_manifest
from .names import check_labels
from .npz import write_npz
from .parity import INF_MISMATCH, ParityReport, check_items_independent, check_outputs_follow_batch
from .progress import Progress
from .repository import check_ensembles_with, install_model, plan_install, staging_dir
from .signals import signals_deferred
from .spec import BuildSpec, TensorSpec, check_model_name
from .templates import template_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    spec: BuildSpec  # resolved, outputs included
    model_dir: Path
    version: int
    config_path: Path
    manifest_path: Path
    parity: ParityReport
    exporter: str
    timings_s: Mapping[str, float]
    fallback: str = ""  # why the first exporter was not used ("" when it was)
    handoff_dir: Path | None = None  # perf_analyzer / Model Analyzer hand-offs (tritongen.handoff), outside the repo
    # the manifest's precision record: {"precision": "fp32"}, or for FP16/INT8 the accuracy guard's figures
    # ("ok", "accuracy": cosine mean/min, top-1, ...; "kept_layers", "attempts", "calibration", ...)
    precision: Mapping[str, Any] = field(default_factory=dict)

    @property
    def batching(self) -> str:
        """One line on how the config batches requests and what its queue delay costs at low load."""
        return batching_text(self.spec)

    def text(self) -> str:
        """What ``tritongen build`` prints: where it wrote what, the parity table, the tensors clients see, the
        batching line and the manifest."""
        how = "from the ONNX file" if self.spec.inputs_from == "onnx" else f"{self.exporter} exporter"
        total_s = sum(self.timings_s.values())
        lines = [f"built {self.model_dir} (version {self.version}, {self.spec.target} target, {how}) in {total_s:.1f}s"]
        if self.fallback:
            lines.append(f"  the {self.exporter} exporter was used because {self.fallback}")
        lines.append(self.parity.table())
        lines += tail_lines(self.spec.inputs, self.spec.outputs, self.batching, self.manifest_path)
        if self.handoff_dir is not None:
            lines.append(f"perf_analyzer / Model Analyzer hand-offs: {self.handoff_dir}")
        return "\n".join(lines)


def client_dims_text(t: TensorSpec) -> str:
    """A tensor's dims as clients see them; a scalar per item says what the model itself reads or writes."""
    return f"{list(t.dims)} (a scalar per item: the model's [batch])" if t.scalar else str(list(t.dims))


def tail_lines(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], batching: str, manifest_path: Path
) -> list[str]:
    """The end of what ``tritongen build`` prints (a model's or an ensemble's): the tensors clients send and get,
    the batching line, the manifest."""
    lines = [f"  input  {t.name:<24} {t.dtype:<6} {client_dims_text(t)}" for t in inputs]
    lines += [f"  output {t.name:<24} {t.dtype:<6} {client_dims_text(t)}" for t in outputs]
    return lines + [batching, f"manifest: {manifest_path}"]


class Stages:
    """Reports one line per stage with its wall time (to ``progress`` and to this module's logger)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress or (lambda message: None)
        self.total = total
        self.index = 0
        self.timings_s: dict[str, float] = {}

    def run(self, name: str, func, *args, **kwargs):
        self.index += 1
        self.progress(f"[{self.index}/{self.total}] {name} ...")
        start = time.perf_counter()
        result = func(*args, **kwargs)
        self.timings_s[name] = round(time.perf_counter() - start, 3)
        logger.debug("stage %s took %.3f s", name, self.timings_s[name])
        self.progress(f"      done in {self.timings_s[name]:.2f}s")
        return result


def _observed_dims(
    outputs: tuple[TensorSpec, ...], observed: list[list[np.ndarray]], batched: bool
) -> tuple[TensorSpec, ...]:
    """Mark as variable (-1) every output dim that the graph leaves symbolic or that changed between cases."""
    resolved = []
    for i, spec in enumerate(outputs):
        shapes = [case[i].shape[1:] if batched else case[i].shape for case in observed]
        shapes = [s or (1,) for s in shapes]
        dims = list(spec.dims)
        if any(len(s) != len(dims) for s in shapes):
            raise TritongenError(
                f"output '{spec.name}' changes rank between batch sizes",
                "make forward() return the same rank for every input shape",
            )
        for axis in range(len(dims)):
            sizes = {s[axis] for s in shapes}
            if len(sizes) > 1 or (dims[axis] != -1 and dims[axis] not in sizes):
                dims[axis] = -1
        resolved.append(replace(spec, dims=tuple(dims)))
    return tuple(resolved)


def _check_names(spec: BuildSpec) -> None:
    names = [t.name for t in spec.inputs] + list(spec.output_names)
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise TritongenError(
            f"tensor name '{sorted(dupes)[0]}' is used twice", "give every input and output its own name"
        )
    if not spec.inputs:
        raise TritongenError(
            "the model has no inputs declared", "pass --input NAME:DTYPE:DIMS, --spec FILE or --sample-inputs FILE"
        )


@dataclass(frozen=True)
class StagedModel:
    """A model folder written into a staging area, not yet installed."""

    spec: BuildSpec  # resolved, outputs included
    folder: Path
    version: int
    manifest_path: Path
    parity: ParityReport
    exporter: str
    form: str
    fallback: str = ""  # why the first exporter was not used
    precision: Mapping[str, Any] = field(default_factory=dict)  # as the manifest records it


def stage_model_steps(spec: BuildSpec, loaded: bool = False) -> int:
    """How many :class:`Stages` :func:`stage_model` runs for ``spec`` (``loaded``: the module is given, so no
    loading stage): load, samples, export, reference, parity gate, files, and the state, precision and TensorRT
    stages where ``spec`` asks for them. Builders add their own stages to it."""
    optional = bool(spec.state_from_attributes) + (spec.precision != "fp32") + (spec.target == "tensorrt")
    return 6 - loaded + optional


def stage_model(spec: BuildSpec, stage: Path, version: int, stages: Stages, loaded=None) -> StagedModel:
    """Load (unless ``loaded`` is given), export, gate and write ``stage/<spec.name>/`` for one ONNX model.

    Used by :func:`build` for a single model and by builders that stage several models (ensembles) into one
    staging folder before validating and installing them together.
    """
    from .consts import check_consts, inputs_by_name, module_with_consts, scripted_defaults, scripted_left_at_default
    from .export import onnx_from_module, torch_outputs_from_module
    from .load import module_from_file
    from .parity import onnx_session, parity_from_onnx
    from .samples import sample_set_from_spec

    check_model_name(spec.name)
    _check_names(spec)
    check_labels(spec.labels, f"labels of model '{spec.name}'")
    if loaded is None:
        loaded = stages.run(
            f"loading {spec.model_path.name}", module_from_file, spec.model_path, spec.model_factory, spec.allow_pickle
        )
    if spec.inputs_from == "program":
        stages.progress(f"      {program_inputs_note(spec)}")
    if loaded.form == "torch.export":
        loaded = _with_program_call(loaded, spec, stages)
    check_consts(loaded.module, spec.consts, [t.name for t in spec.inputs])
    defaults = scripted_defaults(loaded.module, spec.consts, [t.name for t in spec.inputs])
    if defaults:
        spec = replace(spec, consts=spec.consts + defaults)
        stages.progress("      a TorchScript forward() takes every argument: its defaults are fixed at export below")
    left = scripted_left_at_default(loaded.module, spec.consts, [t.name for t in spec.inputs])
    if left:
        stages.progress(f"      forward() arguments left at their defaults at export: {', '.join(left)}")
    if spec.state_from_attributes:  # the wrapper passes the consts itself
        from .state_attrs import explicit_state_from_module

        explicit = stages.run(
            "making the module's state attributes explicit", explicit_state_from_module, loaded.module, spec
        )
        spec, loaded = explicit.spec, replace(loaded, module=explicit.module)
        stages.progress(
            "      state: "
            + ", ".join(
                f"{s.attribute} -> {s.spec.name}/{s.output} {s.spec.dtype}{list(s.spec.dims)}" for s in explicit.states
            )
        )
    else:
        by_name = (
            inputs_by_name(loaded.module, [t.name for t in spec.inputs]) if loaded.form != "torch.export" else None
        )
        if by_name:
            stages.progress(f"      inputs passed to forward() by name ({', '.join(by_name)}: not its argument order)")
        if spec.consts or left or by_name:
            loaded = replace(
                loaded, module=module_with_consts(loaded.module, spec.consts, wrap=bool(left), by_name=by_name)
            )
    if spec.consts and not spec.state_from_attributes:
        stages.progress("      forward() arguments fixed at export: " + ", ".join(f"{n}={v!r}" for n, v in spec.consts))
    samples = stages.run("preparing samples", sample_set_from_spec, spec)
    checked = _checked_sizes(spec)
    if checked:
        stages.progress(f"      {checked}")
    if spec.inputs_from == "samples":
        stages.progress(f"      {fixed_dims_note(spec)}")
    staged_model = stage / spec.name
    version_dir = staged_model / str(version)
    if loaded.form == "onnx":
        from .onnx_stage import onnx_from_onnx_file

        export = stages.run(
            "cleaning the ONNX graph (reference: the original file in ONNX Runtime)",
            onnx_from_onnx_file,
            loaded,
            spec,
            version_dir,
        )
    else:
        export = stages.run(
            f"exporting to ONNX ({_exporter_label(spec, loaded)})",
            onnx_from_module,
            loaded,
            spec,
            samples.export,
            version_dir,
            stage / ".raw",
        )
    shutil.rmtree(stage / ".raw", ignore_errors=True)
    if export.fallback:
        stages.progress(f"      used the {export.exporter} exporter because {export.fallback}")
    for warning in export.warnings:
        stages.progress(f"      warning: {warning}")
    if export.dropped_outputs:
        stages.progress(
            f"      note: forward() returned None for {', '.join(export.dropped_outputs)}: not an output of the model"
        )
    spec = spec.with_outputs(export.outputs)
    bounds = _index_bounds(spec, export.onnx_path)
    samples = _samples_across_tables(samples, spec, bounds, stages)
    if spec.states:
        from .sequence import check_state_tensors

        check_state_tensors(spec.states, spec.inputs, spec.outputs, spec.target)

    def reference():
        return {label: torch_outputs_from_module(loaded.module, spec, inputs) for label, inputs in samples.parity}

    torch_ref = stages.run(
        "running the reference on the samples" if loaded.form == "onnx" else "running PyTorch on the samples", reference
    )

    def gate() -> tuple[ParityReport, list[list[np.ndarray]]]:
        session = onnx_session(export.onnx_path)
        report = parity_from_onnx(export.onnx_path, torch_ref, samples.parity, spec, session)
        observed = [
            session.run([t.name for t in spec.outputs], {t.name: inputs[t.name] for t in spec.inputs})
            for _, inputs in samples.parity
        ]
        if report.ok:  # answers that match PyTorch's, and that Triton's batcher can split and gather
            check_outputs_follow_batch(spec, samples.parity, observed)
            check_items_independent(session, spec, samples.parity[-1], observed[-1], export.onnx_path)
        return report, observed

    report, observed = stages.run(
        "parity gate: ONNX Runtime vs " + ("the original ONNX file" if loaded.form == "onnx" else "PyTorch"), gate
    )
    if not report.ok:
        raise _parity_error(report, export, spec)
    if spec.states:
        from .sequence import check_state_shapes_observed

        check_state_shapes_observed(spec.states, [t.name for t in spec.outputs], samples.parity, observed)
    spec = spec.with_outputs(_observed_dims(spec.outputs, observed, spec.batched))
    classes = spec.outputs[0].dims[-1]
    if spec.labels and classes not in (-1, len(spec.labels)):
        raise TritongenError(
            f"model '{spec.name}' outputs {classes} classes but has {len(spec.labels)} labels",
            "make id2label (and num_labels) list exactly the classes of the classifier's output",
        )
    precision, tensorrt = _precision_stage(spec, loaded, export.onnx_path, samples, stage, version_dir, stages, bounds)

    precision_record = precision.to_dict() if precision is not None else {"precision": spec.precision}

    def write_files() -> Path:
        artifacts = version_dir / ARTIFACT_DIR
        artifacts.mkdir(parents=True, exist_ok=True)
        label, inputs = samples.parity[-1]
        reference = torch_ref[label]
        if precision is not None and precision.check_sample is not None:  # data like the guard measured
            inputs, reference = precision.check_sample
        if spec.states:  # what a client sends at a sequence's start: its inputs, the state zeros (kept inside)
            inputs, reference = sequence_start_sample(spec, inputs, loaded.module)
        write_npz(artifacts / SAMPLES_NAME, {t.name: inputs[t.name] for t in spec.inputs if t.name in inputs})
        write_npz(artifacts / REFERENCE_NAME, {t.name: a for t, a in zip(spec.outputs, reference) if a is not None})
        if spec.target == "local":
            runner = "python/sequence_runner.py" if spec.states else "python/onnx_runner.py"
            shutil.copyfile(template_path(runner), version_dir / "model.py")
        if spec.warmup and not spec.states:  # a warm-up request has no sequence: stateful models start cold
            warm = staged_model / WARMUP_DIR
            warm.mkdir(parents=True, exist_ok=True)
            for name, data in warmup_files(spec, samples.warmup).items():
                (warm / name).write_bytes(data)
        config_path = staged_model / "config.pbtxt"
        config_path.write_text(config_text_from_spec(spec, samples.warmup))
        files = [config_path, *version_dir.rglob("*"), *(staged_model / WARMUP_DIR).rglob("*")]
        if spec.labels:  # the config names it as the first output's label_filename; Triton reads it line by line
            (staged_model / LABELS_FILENAME).write_bytes(("\n".join(spec.labels) + "\n").encode("utf-8"))
            files.append(staged_model / LABELS_FILENAME)
        return write_manifest(
            staged_model,
            version,
            new_manifest(
                version,
                file_hashes(staged_model, files),
                source={"path": _source_path(spec, loaded), "form": loaded.form},
                export={
                    "requested": spec.exporter,
                    **export.to_dict(),
                    "consts": dict(spec.consts),
                    "program_consts": program_consts(loaded),
                },
                spec=_recorded_spec(spec, loaded),
                samples={"from_file": samples.from_file, "cases": [label for label, _ in samples.parity]},
                parity=report.to_dict(),
                precision=precision_record,
                **({"tensorrt": tensorrt} if tensorrt else {}),
            ),
        )

    manifest = stages.run("writing config, samples and manifest", write_files)
    return StagedModel(
        spec=spec,
        folder=staged_model,
        version=version,
        manifest_path=manifest,
        parity=report,
        exporter=export.exporter,
        form=loaded.form,
        fallback=export.fallback,
        precision=precision_record,
    )


def sequence_start_sample(spec: BuildSpec, inputs, module) -> tuple[dict[str, np.ndarray], list]:
    """A stateful model's saved sample: the client inputs alone, and the outputs PyTorch gives for them from zero
    state (the state outputs left out: the server keeps them)."""
    from .export import torch_outputs_from_module

    state_in = {p.input for p in spec.states}
    state_out = {p.output for p in spec.states}
    fed = {t.name: np.zeros_like(inputs[t.name]) if t.name in state_in else inputs[t.name] for t in spec.inputs}
    outputs = torch_outputs_from_module(module, spec, fed)
    client = {n: a for n, a in fed.items() if n not in state_in}
    return client, [None if t.name in state_out else a for t, a in zip(spec.outputs, outputs)]


def _per_item(t) -> str:
    """An input's dims in a build note: a scalar per item as the model reads it."""
    return "[] (a scalar per item)" if t.scalar else str(list(t.dims))


def fixed_dims_note(spec: BuildSpec) -> str:
    """What inferring the inputs from a sample file decided: which dims it fixed, which stay variable."""
    fixed = [f"{t.name}{_per_item(t)}" for t in spec.inputs]
    kept = ", ".join(r.text for r in spec.dim_ranges)
    from .export import EXAMPLE_INPUTS_NPZ

    in_python = spec.sample_inputs is not None and spec.sample_inputs.name == EXAMPLE_INPUTS_NPZ
    source = "example_inputs" if in_python else spec.sample_inputs.name if spec.sample_inputs else "the samples"
    note = f"inputs inferred from {source}: " + ", ".join(fixed)
    if kept:
        return note + f" (variable: {kept}; every other dimension fixed at the samples' size)"
    if in_python:  # tritongen.build(module, example_inputs=...): the keyword, not the command line's flags
        return note + " (every dimension fixed at the examples' size: pass dim_ranges=['INPUT:AXIS:MIN:OPT:MAX'])"
    return note + (
        " (every dimension fixed at the samples' size: declare variable ones -1 with --input, or pass "
        "--dim-range INPUT:AXIS:MIN:OPT:MAX)"
    )


def _with_program_call(loaded: LoadedModel, spec: BuildSpec, stages: Stages) -> LoadedModel:
    """A torch.export program is called with its tensors alone: the values it fixed at export go back in their
    places, and the tensors into its argument structure (keywords, lists, dicts)."""
    from .export_input import fixed_arguments, module_with_program_call

    if spec.exporter == "torchscript":
        raise TritongenError(
            "--exporter torchscript cannot export a torch.export program (its module is not scriptable or traceable)",
            "drop --exporter (the dynamo exporter exports it), or build the TorchScript file of the model instead",
        )
    fixed = fixed_arguments(loaded.exported_program)
    text = ", ".join(f"{name}={value!r}" for name, value in fixed)
    if spec.consts:
        held = f" ({text})" if fixed else ""
        raise TritongenError(
            f"--const given for a torch.export archive, whose program fixed its number arguments at export{held}",
            "drop --const (export the model again to change the values)",
        )
    if fixed:
        stages.progress(f"      forward() arguments fixed in the exported program: {text}")
    return replace(loaded, module=module_with_program_call(loaded.exported_program, loaded.module))


def program_consts(loaded: LoadedModel) -> dict[str, Any]:
    """The values a torch.export program fixed at export, for the manifest (JSON values; others as their repr)."""
    if loaded.form != "torch.export":
        return {}
    from .export_input import fixed_arguments

    return {
        name: value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
        for name, value in fixed_arguments(loaded.exported_program)
    }


def _checked_sizes(spec: BuildSpec) -> str:
    """The line on the sizes the gate runs each variable dimension at (``x[1] 32/64/128``): its MIN and MAX cases
    and the OPT the export and the batch cases use (AXIS counts dims without the batch dimension); with
    ``--sample-inputs`` the file's sizes, and MIN/MAX only where a --dim-range gives them; "" without either."""
    from .dim_ranges import ranges_from_spec

    ranges = ranges_from_spec(spec)
    if spec.sample_inputs is None:
        sizes = ", ".join(f"{r.input}[{r.axis}] {r.min}/{r.opt}/{r.max}" for r in ranges)
        return f"variable dims checked at MIN/OPT/MAX: {sizes}" if sizes else ""
    given = ", ".join(f"{r.input}[{r.axis}] {r.min}/{r.max}" for r in ranges if r.explicit)
    if not any(t.dynamic_axes for t in spec.inputs):
        return ""
    tokenized = spec.sample_inputs.name == TOKENIZED_SAMPLES_NAME  # a text ensemble's own sentences
    where = "the tokenized sample sentences" if tokenized else "the sample file"
    return f"variable dims checked at the sizes of {where}" + (f" and at MIN/MAX: {given}" if given else "")


def program_inputs_note(spec: BuildSpec) -> str:
    """What reading the inputs from a torch.export program decided (:mod:`tritongen.export_input`)."""
    batch = f"batched, max_batch_size {spec.max_batch_size}" if spec.batched else "unbatched"
    if spec.inputs_note:
        batch += f": {spec.inputs_note}"
    read = ", ".join(f"{t.name} {t.dtype}{_per_item(t)}" for t in spec.inputs)
    note = f"inputs read from the exported program: {read}"
    bounded = [r.text for r in spec.dim_ranges]
    tied = [t.text for t in spec.tied_dims]  # computed from another dimension: checked at the sizes that follow
    return (
        note
        + f" ({batch}"
        + (f"; ranges {', '.join(bounded)}" if bounded else "")
        + (f"; tied {', '.join(tied)}" if tied else "")
        + ")"
    )


def _in_memory(loaded) -> bool:
    """Built from the API's in-memory module: its file paths are a temporary folder's, gone after the build."""
    return str(loaded.source).startswith("<in-memory")


def _source_path(spec: BuildSpec, loaded) -> str:
    return str(loaded.source) if _in_memory(loaded) else str(spec.model_path)


def _recorded_spec(spec: BuildSpec, loaded) -> dict:
    """The spec for the manifest; an in-memory module's temporary paths recorded as what they stood for."""
    recorded = spec.to_dict()
    if _in_memory(loaded):
        recorded.update(model_path=str(loaded.source), sample_inputs="<example_inputs>")
    return recorded


def _parity_error(report: ParityReport, export, spec: BuildSpec) -> TritongenError:
    how = f" (exported by the {export.exporter} exporter because {export.fallback})" if export.fallback else ""
    reference = "the original ONNX file's" if spec.inputs_from == "onnx" else "PyTorch's"
    failed = sorted({r.case for r in report.results if not r.ok})
    if failed and all(c.endswith(("min dims", "max dims")) for c in failed):
        from .dim_ranges import range_hint

        return TritongenError(
            f"the ONNX model's outputs differ from {reference} at {' and '.join(failed)} but not at the export's size"
            f"{how}: the export fixed a size that should vary",
            "make forward() compute sizes with torch operations (not Python numbers), "
            + ("try --exporter dynamo, " if export.exporter != "dynamo" else "")
            + f"or give --dim-range the sizes the model supports{range_hint(spec)}",
            details=report.table(),
        )
    # NaN: no tolerance helps. Generated integers are 0 or 1, and a length or count of 0 empties a row (a masked
    # softmax over nothing is NaN): where the build made the samples, that is the likely cause
    generated = spec.sample_inputs is None and any(t.dtype.startswith(("INT", "UINT")) for t in spec.inputs)
    integers = (
        "the build's generated integer inputs are 0 or 1 (a length or count of 0 can empty a row, and a masked "
        "softmax over nothing is NaN): pass --sample-inputs with values the model is meant for"
    )
    nan = sorted({r.output for r in report.results if r.note == "PyTorch output holds NaN"})
    if nan:  # the reference itself is not a number
        return TritongenError(
            f"{reference[0].upper()}{reference[1:]} output {', '.join(map(repr, nan))} holds NaN on the build's "
            "samples, so no answer can be checked against it",
            integers
            if generated
            else "fix the model (a division by zero, a log of 0, an uninitialised weight), or pass --sample-inputs "
            "with inputs it is meant for",
            details=report.table(),
        )
    mismatch = sorted({f"{r.output} at {r.case}" for r in report.results if r.note == "NaN mismatch"})
    if mismatch:
        return TritongenError(
            f"the ONNX model's outputs hold NaN where {reference} do not, or the other way round "
            f"({', '.join(mismatch[:3])}){how}",
            integers
            if generated
            else "check the model for rows it computes from nothing (a mask with no position, a length of 0)",
            details=report.table(),
        )
    infinite = sorted({f"{r.output} at {r.case}" for r in report.results if r.note == INF_MISMATCH})
    if infinite:
        return TritongenError(
            f"the ONNX model's outputs hold an infinity where {reference} hold a number or the other infinity "
            f"({', '.join(infinite[:3])}){how}",
            "no tolerance covers it: check the model for an overflow or a mask the export computes differently "
            "(a -inf fill, a division by zero)",
            details=report.table(),
        )
    return TritongenError(
        f"the ONNX model's outputs differ from {reference} beyond tolerance{how}",
        "raise --atol/--rtol if the differences are acceptable, or check the model for ops that export differently",
        details=report.table(),
    )


def _exporter_label(spec: BuildSpec, loaded) -> str:
    from .export import exporter_order

    order = exporter_order(loaded.module, spec.exporter)
    return f"{order[0]} exporter" + (f", {order[1]} if it fails" if len(order) > 1 else "")


# --target local serves the variant with ONNX Runtime on the CPU, which has few FP16 kernels (casts around FP32 ones).
LOCAL_FP16_NOTE = (
    "--target local runs this FP16 model with ONNX Runtime on the CPU, where FP16 may be slower than FP32 "
    "(it checks accuracy here; the speed is for a GPU: --target onnxruntime or tensorrt)"
)


def int8_cpu_note(saturates: bool | None) -> str:
    """What an INT8 CPU-form build says about the CPU its guard measured on (``saturates``: x86 without VNNI;
    None: an x86 CPU whose kind could not be read)."""
    if saturates:
        return (
            "this CPU has no VNNI: ONNX Runtime's INT8 kernels add in 16 bits and saturate here, so the guard "
            "measured (and kept layers in FP32 for) this CPU; a host with VNNI answers closer to FP32"
        )
    where = "could not tell whether this CPU has VNNI" if saturates is None else "measured on a CPU without 16-bit sums"
    return (
        f"{where}; on an x86 CPU without VNNI (AVX2 only) ONNX Runtime's INT8 kernels saturate and answer further "
        "from FP32: run tritongen infer NAME --check on the serving host"
    )


def _index_bounds(spec: BuildSpec, onnx_path: Path) -> dict[str, int]:
    """The rows of the table each integer input indexes, for those that only index tables (token ids): read once
    from the exported graph for the samples and for the --calib-data check (:mod:`tritongen.index_inputs`)."""
    from .dtypes import numpy_dtype
    from .index_inputs import index_bounds_from_onnx

    ints = [t.name for t in spec.inputs if numpy_dtype(t.dtype).kind in "iu"]
    return index_bounds_from_onnx(onnx_path, ints) if ints else {}


def _samples_across_tables(samples, spec: BuildSpec, bounds: dict[str, int], stages: Stages):
    """Generated integer inputs that only index tables (``bounds``: :func:`_index_bounds`) redrawn across those
    tables for the parity gate, the calibration and the check sample; the export ran on ids 0 and 1."""
    from .dtypes import numpy_dtype
    from .samples import index_draw_bound, with_index_bounds

    ints = [t.name for t in spec.inputs if numpy_dtype(t.dtype).kind in "iu"]
    if samples.from_file or not ints:
        return samples
    kept = [n for n in ints if n not in bounds]
    if kept:
        stages.progress(
            f"      samples: {', '.join(kept)} kept at 0 and 1 (the graph reads {'it' if len(kept) == 1 else 'them'} "
            "otherwise than as a table's index: a mask, a count); --sample-inputs checks other values"
        )
    if bounds:
        dtypes = {t.name: numpy_dtype(t.dtype) for t in spec.inputs}
        stages.progress(
            "      samples: "
            + ", ".join(
                f"{n} drawn from 0..{index_draw_bound(b, dtypes[n]) - 1} (the table it indexes has {b} rows)"
                for n, b in bounds.items()
            )
        )
    return with_index_bounds(samples, bounds)


def _precision_stage(
    spec: BuildSpec,
    loaded,
    fp32_onnx: Path,
    samples,
    stage: Path,
    version_dir: Path,
    stages: Stages,
    bounds: dict[str, int],
):
    """FP16/INT8 behind the accuracy guard (the variant replaces model.onnx), then for ``--target tensorrt``
    the prepared ONNX, its profiles and the lint under ``<version>/tritongen/``.
    Returns (guard result, tensorrt record)."""
    precision = None
    if spec.precision != "fp32":
        from .precision.stage import move_onnx, precision_from_build

        work = stage / ".precision"
        try:
            precision = stages.run(
                f"{spec.precision} variant + accuracy guard (vs PyTorch FP32, held-out samples)",
                precision_from_build,
                fp32_onnx,
                spec,
                loaded.module,
                samples.parity,
                work,
                stages.progress,
                index_bounds=bounds,
            )
            move_onnx(precision.onnx_path, version_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        stages.progress(f"      {precision.summary()}")
        if spec.target == "local" and spec.precision == "fp16":
            stages.progress(f"      note: {LOCAL_FP16_NOTE}")
        if "u8s8_saturation" in precision.calibration:  # the CPU form: its answers depend on the CPU's INT8 kernels
            stages.progress(f"      note: {int8_cpu_note(precision.calibration['u8s8_saturation'])}")
    if spec.target != "tensorrt":
        if precision is None or spec.target != "onnxruntime":
            return precision, None
        from .lint import lint_from_onnx  # ONNX Runtime's TensorRT accelerator will parse this graph at load

        lint = lint_from_onnx(version_dir / "model.onnx", None)
        if not lint.ok:
            stages.progress(
                "      warning: TensorRT's parser will reject parts of this graph (ONNX Runtime runs them on CUDA): "
                + "; ".join(f.message for f in lint.findings if f.level == "error")[:300]
            )
        return precision, {"lint": lint.to_dict()}
    from .engine import prepared_onnx_from_onnx

    record = stages.run("preparing for TensorRT (ONNX, profiles, lint)", prepared_onnx_from_onnx, version_dir, spec)
    if record["tensorrt_version"] is None:
        stages.progress(
            "      TensorRT is not installed here: wrote "
            f"{ARTIFACT_DIR}/{PREPARED_ONNX} and {ARTIFACT_DIR}/{ENGINE_PLAN_NAME}; "
            f"run `tritongen engine {shlex.quote(str(spec.repo))}` on a GPU host with TensorRT to make model.plan"
        )
    return precision, record


def build(spec: BuildSpec, progress: Progress | None = None, loaded=None) -> BuildResult:
    """Build one model into ``spec.repo`` and return what was written. Raises :class:`TritongenError`.

    ``loaded`` (a :class:`tritongen.load.LoadedModel`) skips loading ``spec.model_path``: an in-memory module.
    """
    from .precision.calibration import check_text_has_tokenizer
    from .validate import check_repository

    check_model_name(spec.name)
    _check_names(spec)
    tokenizer = spec.tokenizer or (spec.model_path if spec.model_path.is_dir() else None)
    check_text_has_tokenizer(spec.calib_data, tokenizer, spec.inputs)
    plan = plan_install(spec)
    stages = Stages(progress, stage_model_steps(spec, loaded is not None) + 2)  # + validating, installing
    if plan.mode == "new_version" and is_tuned_config(plan.model_dir / CONFIG_NAME):
        stages.progress(
            f"      note: {spec.name}/{CONFIG_NAME} was written by tritongen tune; this build replaces it with its own "
            "settings (instances, batch sizes, queue delay): run tritongen tune again on the new version"
        )
    with staging_dir(plan) as stage:  # from here on, any failure removes everything this build wrote
        staged = stage_model(spec, stage, plan.version, stages, loaded)
        stages.run("validating the generated config", check_repository, stage)
        if plan.mode == "new_version":
            check_shared_config(plan.model_dir, staged.folder, plan.version, stages.progress)
        added = frozenset({spec.name} if plan.mode == "new_version" else ())
        check_ensembles_with(plan.repo, {spec.name: staged.folder}, added)
        # a new version's folder and shared files go in together
        with signals_deferred(f"after the install it held back, which finished: {plan.model_dir}"):
            trash = stage / ".replaced"  # what the install replaces; not beside the staged folder, whatever its name
            trash.mkdir()
            installed = stages.run(f"installing into {plan.repo}", install_model, staged.folder, plan, trash)

    return BuildResult(
        spec=staged.spec,
        model_dir=installed,
        version=plan.version,
        config_path=installed / "config.pbtxt",
        manifest_path=installed / staged.manifest_path.relative_to(staged.folder),
        parity=staged.parity,
        exporter=staged.exporter,
        timings_s=dict(stages.timings_s),
        fallback=staged.fallback,
        precision=staged.precision,
    )
