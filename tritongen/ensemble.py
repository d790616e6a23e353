"""``tritongen build`` for ensembles: what users send -> ``<name>_preprocess`` -> ``<name>_model`` ->
``<name>_postprocess``.

Input is a Hugging Face folder (task detected from its config, or ``--task``) or a model file with
``--tokenizer`` / ``--preprocess`` / ``--postprocess``. The model step is built exactly like a single model
(:func:`tritongen.build.stage_model`: export, parity gate, config, manifest); the pre/post steps are
Python-backend models (:mod:`tritongen.pre_post`); the ensemble wires them by tensor name. All four folders
are written into one staging folder, validated together with Triton's ensemble rules, then installed one by
one (each atomically; composing models before the ensemble). Nothing is replaced without ``--force``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import Stages, stage_model_steps, tail_lines
from .config import batching_text, preferred_batch_sizes
from .config_changes import check_shared_config
from .errors import TritongenError
from .hf import TEXT_TASKS, HFModel
from .npz import write_npz
from .pre_post import (
    PythonStep,
    custom_step_from_code,
    image_preprocess_step,
    model_spec_for_tokenizer,
    postprocess_step,
    python_step_config_text,
    stage_python_step,
    text_preprocess_step,
    user_code_from_file,
)
from .progress import Progress
from .signals import signals_deferred
from .spec import BuildSpec, TensorSpec, check_model_name
from .templates import render

PRE_KINDS = ("tokenizer", "image", "none")
POST_KINDS = {
    "mean-pool": "mean_pool_normalize",
    "mean_pool": "mean_pool_normalize",
    "normalize": "normalize",
    "softmax-topk": "softmax_topk",
    "softmax_topk": "softmax_topk",
    "labels": "softmax_topk",
    "raw": "raw",
    "none": "raw",
}
WORK_DIR = ".work"  # inside the staging folder; the build's validation skips it by name


@dataclass(frozen=True)
class EnsembleStep:
    model_name: str
    input_map: Mapping[str, str]  # composing model's input -> ensemble tensor
    output_map: Mapping[str, str]  # composing model's output -> ensemble tensor


@dataclass(frozen=True)
class EnsembleBuildResult:
    spec: BuildSpec  # the model step's resolved spec (inputs/outputs of <name>_model)
    task: str | None
    ensemble_dir: Path
    model_dirs: Mapping[str, Path]  # every installed folder, by model name, the ensemble last
    inputs: tuple[TensorSpec, ...]  # what users send
    outputs: tuple[TensorSpec, ...]  # what they get back
    steps: tuple[EnsembleStep, ...]
    parity: Any  # ParityReport of the model step
    exporter: str
    manifest_path: Path
    timings_s: Mapping[str, float]

    @property
    def batching(self) -> str:
        """One line on how the steps batch requests (each its own batcher, with the same queue delay)."""
        return batching_text(self.spec, steps=len(self.steps))

    def text(self) -> str:
        """What ``tritongen build`` prints for an ensemble: where it wrote it, the model step's parity table, the
        steps, the tensors clients send and get, the batching line and the manifest."""
        lines = [
            f"built ensemble {self.ensemble_dir} ({self.task or 'custom'}, {self.spec.target} target, "
            f"{self.exporter} exporter) in {sum(self.timings_s.values()):.1f}s",
            self.parity.table(),
            "  steps  " + " -> ".join(s.model_name for s in self.steps),
        ]
        return "\n".join(lines + tail_lines(self.inputs, self.outputs, self.batching, self.manifest_path))


def model_names(name: str) -> dict[str, str]:
    return {"ensemble": name, "pre": f"{name}_preprocess", "model": f"{name}_model", "post": f"{name}_postprocess"}


def ensemble_config_text(
    name: str,
    max_batch_size: int,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    steps: tuple[EnsembleStep, ...],
) -> str:
    return render(
        "ensemble.pbtxt.j2",
        name=name,
        max_batch_size=max_batch_size,
        inputs=[t.to_dict() for t in inputs],
        outputs=[t.to_dict() for t in outputs],
        steps=[
            {"model_name": s.model_name, "input_map": dict(s.input_map), "output_map": dict(s.output_map)}
            for s in steps
        ],
    )


# ------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class _Source:
    """The model and the pre/post choices, decided before any export work."""

    model_spec: BuildSpec  # for <name>_model
    hf: HFModel | None
    task: str | None
    pre: str  # tokenizer | image | none | custom
    post: str  # mean_pool_normalize | normalize | softmax_topk | raw | custom
    tokenizer_dir: Path | None
    max_length: int
    pre_code: Any = None
    post_code: Any = None


def _pre_choice(spec: BuildSpec, task: str | None) -> str:
    if spec.preprocess is None:
        if task in TEXT_TASKS:
            return "tokenizer"
        if task == "image-classification":
            return "image"
        return "none"
    if spec.preprocess in PRE_KINDS:
        return spec.preprocess
    if spec.preprocess.endswith(".py") or Path(spec.preprocess).is_file():
        return "custom"
    raise TritongenError(
        f"unknown --preprocess '{spec.preprocess}'", f"use {', '.join(PRE_KINDS)} or a .py file with preprocess(batch)"
    )


def _post_choice(spec: BuildSpec, task: str | None) -> str:
    if spec.postprocess is None:
        return {
            "text-classification": "softmax_topk",
            "image-classification": "softmax_topk",
            "feature-extraction": "embedding",
        }.get(task or "", "raw")
    if spec.postprocess in POST_KINDS:
        return POST_KINDS[spec.postprocess]
    if spec.postprocess.endswith(".py") or Path(spec.postprocess).is_file():
        return "custom"
    raise TritongenError(
        f"unknown --postprocess '{spec.postprocess}'",
        f"use {', '.join(sorted(set(POST_KINDS) - {'mean_pool', 'softmax_topk', 'none'}))} "
        "or a .py file with postprocess(batch)",
    )


def _source_from_spec(spec: BuildSpec) -> _Source:
    from .hf import (
        check_sentence_transformers_modules,
        check_tokenizer_gives,
        hf_model_from_folder,
        is_hf_folder,
        labels_from_config,
        read_config,
        task_from_name,
        text_settings_from_folder,
    )

    names = model_names(spec.name)
    hf = None
    task = task_from_name(spec.task) if spec.task else None
    if spec.model_path.is_dir():
        if not is_hf_folder(spec.model_path):
            raise TritongenError(
                f"{spec.model_path} is a folder without config.json",
                "pass a Hugging Face folder (save_pretrained) or a model file",
            )
        hf = hf_model_from_folder(spec.model_path, task, spec.tokenizer)
        task = hf.task
    elif spec.tokenizer is not None and task is None:
        task = "feature-extraction"
    pre, post = _pre_choice(spec, task), _post_choice(spec, task)
    if hf is not None and post == "embedding":  # what the model's own modules do, where it says
        check_sentence_transformers_modules(spec.model_path)
    channels = hf.inputs[0].dims[0] if hf is not None and hf.image is not None else 3
    if pre == "image" and channels != 3:  # the step decodes every image to RGB: each request would fail its shape
        raise TritongenError(
            f"{spec.model_path}/config.json: the model takes images of {channels} channel(s), and tritongen's image "
            "pre-processing gives RGB (3)",
            "pass --preprocess with a .py file that gives the model's channels",
        )
    model_spec = dataclasses.replace(spec, name=names["model"], task=task)
    tokenizer_dir, max_length = None, 0
    if hf is not None:
        if spec.inputs and tuple(spec.inputs) != hf.inputs:
            raise TritongenError(
                "--input cannot change the inputs of a Hugging Face model", "drop --input; they come from the folder"
            )
        model_spec = dataclasses.replace(
            model_spec, inputs=hf.inputs, output_names=spec.output_names or hf.output_names, labels=hf.labels
        )
        if hf.text is not None:
            tokenizer_dir, max_length = hf.text.tokenizer_dir, hf.text.max_length
    elif pre == "tokenizer":
        if spec.tokenizer is None:
            raise TritongenError("--preprocess tokenizer needs the tokenizer's folder", "pass --tokenizer DIR")
        config = read_config(spec.tokenizer) if (spec.tokenizer / "config.json").is_file() else {}
        text = text_settings_from_folder(spec.tokenizer, config, None, accepts=("input_ids", "attention_mask"))
        tokenizer_dir, max_length = spec.tokenizer, text.max_length
        inputs = spec.inputs or tuple(TensorSpec(n, "INT64", (-1,)) for n in text.model_input_names)
        check_tokenizer_gives(inputs, text.tokenizer_outputs)  # before any export work
        labels = labels_from_config(config) if task == "text-classification" else ()
        model_spec = dataclasses.replace(model_spec, inputs=inputs, labels=labels)
    elif pre == "image":
        raise TritongenError(
            "--preprocess image needs the model's preprocessor_config.json",
            "build from the Hugging Face folder, or pass --preprocess my_pre.py",
        )
    if pre == "tokenizer" and tokenizer_dir is None:
        raise TritongenError(
            f"the {task or 'model'} has no tokenizer to pre-process text with",
            "pass --tokenizer DIR or --preprocess my_pre.py",
        )
    if not model_spec.inputs:
        raise TritongenError(
            "the model's inputs are not declared", "pass --input NAME:DTYPE:DIMS (or build a Hugging Face folder)"
        )
    if spec.max_batch_size < 1:
        raise TritongenError("an ensemble needs batching: --max-batch-size is 0", "use --max-batch-size 1 or more")
    pre_code = user_code_from_file(Path(spec.preprocess or ""), "preprocess") if pre == "custom" else None
    post_code = user_code_from_file(Path(spec.postprocess or ""), "postprocess") if post == "custom" else None
    if pre == "none" and post == "raw":
        raise TritongenError(
            "neither pre- nor post-processing is chosen, so there is no ensemble to build",
            "pass --preprocess/--postprocess (or --task), or build the model on its own",
        )
    if pre == "tokenizer":  # a TensorRT profile takes every length the tokenizer step sends
        model_spec = model_spec_for_tokenizer(model_spec, max_length)
    return _Source(
        model_spec=model_spec,
        hf=hf,
        task=task,
        pre=pre,
        post=post,
        tokenizer_dir=tokenizer_dir,
        max_length=max_length,
        pre_code=pre_code,
        post_code=post_code,
    )


def _model_samples(source: _Source, work: Path) -> BuildSpec:
    """Real tokenized sentences for the parity gate of a text model (unless the user gave samples)."""
    from .hf import text_samples

    spec = source.model_spec
    if spec.sample_inputs is not None or source.tokenizer_dir is None or source.pre != "tokenizer":
        return spec
    from .layout import TOKENIZED_SAMPLES_NAME

    work.mkdir(parents=True, exist_ok=True)
    path = work / TOKENIZED_SAMPLES_NAME
    max_rows = spec.max_batch_size if spec.batched else None
    write_npz(path, text_samples(source.tokenizer_dir, tuple(t.name for t in spec.inputs), source.max_length, max_rows))
    return dataclasses.replace(spec, sample_inputs=path)


def _end_to_end(source: _Source, staged, pre: PythonStep | None, post: PythonStep | None, path: Path) -> Path | None:
    """Write the reference ``infer --check`` compares the served ensemble with: the build's own sentences, and the
    PyTorch outputs of the model step post-processed by the reference in :mod:`tritongen.end_to_end`. Only for
    text ensembles whose parity samples tritongen tokenized itself and whose steps are built in (not custom)."""
    from .end_to_end import postprocessed, write_reference
    from .hf import sample_sentences
    from .layout import ARTIFACT_DIR, REFERENCE_NAME, SAMPLES_NAME
    from .npz import arrays_from_npz
    from .pre_post import LABELS_FILE

    if (
        pre is None
        or source.pre != "tokenizer"
        or source.post == "custom"
        or source.model_spec.sample_inputs is not None
    ):
        return None
    model = staged.spec
    artifacts = staged.folder / str(staged.version) / ARTIFACT_DIR
    outputs = arrays_from_npz(artifacts / REFERENCE_NAME)
    samples = arrays_from_npz(artifacts / SAMPLES_NAME)
    sentences = sample_sentences(model.max_batch_size if model.batched else None)
    rows = len(next(iter(outputs.values())))  # the saved samples repeat the sentences up to the max batch size
    texts = [sentences[i % len(sentences)] for i in range(rows)]
    if post is None:
        final = dict(outputs)
    else:
        kind = post.parameters["kind"]
        labels = post.texts.get(LABELS_FILE, "").split("\n")
        final = postprocessed(
            kind,
            {t.name: outputs[t.name] for t in model.outputs},
            samples.get("attention_mask"),
            labels,
            int(post.parameters.get("top_k", "0")),
        )
    return write_reference(path, texts, final)


def _pre_step(source: _Source, name: str) -> PythonStep | None:
    spec = source.model_spec
    if source.pre == "tokenizer":
        tokenizer_dir = source.tokenizer_dir  # set whenever pre is "tokenizer" (_source_from_spec)
        return text_preprocess_step(name, tokenizer_dir, tuple(t.name for t in spec.inputs), source.max_length)  # type: ignore[arg-type]
    if source.pre == "image":
        return image_preprocess_step(name, source.hf.image, spec.inputs[0])  # type: ignore[union-attr]  # image: from a HF folder
    if source.pre == "custom":
        inputs = source.pre_code.declared or (TensorSpec("INPUT", "STRING", (1,)),)
        clash = {t.name for t in inputs} & {t.name for t in spec.inputs}
        if clash:
            raise TritongenError(
                f"the preprocess input '{sorted(clash)[0]}' has the name of a model input",
                "give INPUTS in your preprocess file names of their own",
            )
        return custom_step_from_code(name, source.pre_code, inputs, spec.inputs)
    return None


def _post_step(source: _Source, name: str, model: BuildSpec) -> PythonStep | None:
    kind = source.post
    if kind == "raw":
        return None
    if kind == "custom":
        outputs = source.post_code.declared
        clash = {t.name for t in outputs} & ({t.name for t in model.outputs} | {t.name for t in model.inputs})
        if clash:
            raise TritongenError(
                f"the postprocess output '{sorted(clash)[0]}' has the name of a model tensor",
                "give OUTPUTS in your postprocess file names of their own",
            )
        return custom_step_from_code(name, source.post_code, model.outputs, outputs)
    mask = next((t for t in model.inputs if t.name == "attention_mask"), None)
    if kind == "embedding":
        kind = "mean_pool_normalize" if len(model.outputs[0].dims) == 2 else "normalize"
    return postprocess_step(name, kind, model.outputs, attention_mask=mask, labels=model.labels, top_k=model.top_k)


def _wiring(
    pre: PythonStep | None, model: BuildSpec, post: PythonStep | None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], tuple[EnsembleStep, ...]]:
    """Ensemble inputs, outputs and steps: every tensor keeps its name across steps (each is written once)."""
    steps = []
    if pre is not None:
        steps.append(
            EnsembleStep(pre.name, {t.name: t.name for t in pre.inputs}, {t.name: t.name for t in pre.outputs})
        )
    steps.append(
        EnsembleStep(model.name, {t.name: t.name for t in model.inputs}, {t.name: t.name for t in model.outputs})
    )
    if post is not None:
        steps.append(
            EnsembleStep(post.name, {t.name: t.name for t in post.inputs}, {t.name: t.name for t in post.outputs})
        )
    inputs = pre.inputs if pre is not None else model.inputs
    outputs = post.outputs if post is not None else model.outputs
    return tuple(inputs), tuple(outputs), tuple(steps)


# ------------------------------------------------------------------------------------------ build


def build_ensemble(spec: BuildSpec, progress: Progress | None = None) -> EnsembleBuildResult:
    """Build the ensemble ``spec.name`` and its composing models into ``spec.repo``. Raises :class:`TritongenError`.
    The tokenizer files are read once: the settings, the parity samples and the pre-processing step use the same
    bytes (:func:`tritongen.hf.tokenizer_read_once`)."""
    from .hf import tokenizer_read_once

    with tokenizer_read_once():
        return _build_ensemble(spec, progress)


def _build_ensemble(spec: BuildSpec, progress: Progress | None) -> EnsembleBuildResult:
    from .end_to_end import END_TO_END_NAME
    from .hf import loaded_from_hf
    from .layout import ARTIFACT_DIR
    from .manifest import ENSEMBLE, file_hashes, new_manifest, write_manifest
    from .repository import check_ensembles_with, install_model, installing, plan_install, staging_dir
    from .validate import check_repository

    check_model_name(spec.name)
    names = model_names(spec.name)
    for n in names.values():
        check_model_name(n)
    source = _source_from_spec(spec)
    roles = [
        r
        for r in ("ensemble", "pre", "model", "post")
        if not (r == "pre" and source.pre == "none") and not (r == "post" and source.post == "raw")
    ]
    rebuilt = frozenset(names[r] for r in roles)  # steps of this ensemble may be replaced together with it
    plans = {r: plan_install(dataclasses.replace(spec, name=names[r]), rebuilt) for r in roles}  # conflicts up front
    # stage_model's stages (loading counted there, or here for a Hugging Face folder) + steps, validating, installing
    stages = Stages(progress, stage_model_steps(source.model_spec) + 3)
    with staging_dir(plans["ensemble"]) as stage:
        model_spec = _model_samples(source, stage / WORK_DIR)
        loaded = (
            stages.run(f"loading the Hugging Face model from {spec.model_path.name}", loaded_from_hf, source.hf)
            if source.hf
            else None
        )
        from .build import stage_model

        staged = stage_model(model_spec, stage, plans["model"].version, stages, loaded=loaded)
        model = staged.spec

        def write_steps():
            pre = _pre_step(source, names["pre"])
            post = _post_step(source, names["post"], model)
            preferred = preferred_batch_sizes(spec)
            for role, step in (("pre", pre), ("post", post)):
                if step is not None:
                    text = python_step_config_text(step, spec.max_batch_size, preferred, spec.max_queue_delay_us)
                    stage_python_step(step, stage, plans[role].version, text)
            inputs, outputs, steps = _wiring(pre, model, post)
            folder = stage / names["ensemble"]
            version = plans["ensemble"].version
            (folder / str(version)).mkdir(parents=True, exist_ok=True)
            config = folder / "config.pbtxt"
            config.write_text(ensemble_config_text(names["ensemble"], spec.max_batch_size, inputs, outputs, steps))
            reference = _end_to_end(source, staged, pre, post, folder / str(version) / ARTIFACT_DIR / END_TO_END_NAME)
            manifest = write_manifest(
                folder,
                version,
                new_manifest(
                    version,
                    file_hashes(folder, [config] + ([reference] if reference is not None else [])),
                    kind=ENSEMBLE,
                    source={"path": str(spec.model_path), "task": source.task, "form": staged.form},
                    preprocess=None if pre is None else pre.to_dict(),
                    model={"name": model.name, "spec": model.to_dict(), "parity": staged.parity.to_dict()},
                    postprocess=None if post is None else post.to_dict(),
                    inputs=[t.to_dict() for t in inputs],
                    outputs=[t.to_dict() for t in outputs],
                    steps=[dataclasses.asdict(s) for s in steps],
                    end_to_end_reference=reference is not None,
                ),
            )
            return pre, post, inputs, outputs, steps, manifest

        pre, post, inputs, outputs, steps, manifest = stages.run(
            "writing pre/post-processing and the ensemble", write_steps
        )
        stages.run("validating the ensemble and its models", check_repository, stage, skip_folders=(WORK_DIR,))
        for role in roles:  # every version of a model (an ensemble's steps too) shares its config.pbtxt
            if plans[role].mode == "new_version":
                check_shared_config(plans[role].model_dir, stage / names[role], plans[role].version, stages.progress)
        check_ensembles_with(
            spec.repo,
            {names[r]: stage / names[r] for r in roles},
            frozenset(names[r] for r in roles if plans[r].mode == "new_version"),
        )

        def install() -> dict[str, Path]:
            installed = {}
            # the four models go in together: a Ctrl-C waits for the last rename, a failure undoes the others
            built = ", ".join(sorted(names[r] for r in roles))
            finished = f"after the install it held back, which finished: {built} in {spec.repo}"
            with signals_deferred(finished), installing(spec.repo) as undo:
                for role in sorted(plans, key=("pre", "model", "post", "ensemble").index):  # composing models first
                    folder = stage / names[role]
                    trash = stage / WORK_DIR / f"trash-{role}"
                    trash.mkdir(parents=True, exist_ok=True)
                    installed[names[role]] = install_model(folder, plans[role], trash, undo)
            return installed

        installed = stages.run(f"installing into {spec.repo}", install)

    ensemble_dir = installed[names["ensemble"]]
    return EnsembleBuildResult(
        spec=model,
        task=source.task,
        ensemble_dir=ensemble_dir,
        model_dirs=installed,
        inputs=inputs,
        outputs=outputs,
        steps=steps,
        parity=staged.parity,
        exporter=staged.exporter,
        manifest_path=ensemble_dir / manifest.relative_to(stage / names["ensemble"]),
        timings_s=dict(stages.timings_s),
    )
