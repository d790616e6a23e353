"""The public Python API, re-exported by :mod:`tritongen`: one function per command of the CLI.

Every function imports the stage it needs when it is called, so ``import tritongen`` stays light (no torch, no
tritonclient). Every failure is a :class:`tritongen.errors.TritongenError` carrying the problem and its fix.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TritongenError
from .plan_compat import DEFAULT_TRITON_VERSION
from .progress import Progress

if TYPE_CHECKING:  # pragma: no cover - types only
    from .build import BuildResult
    from .deploy.docker import DockerSteps
    from .deploy.rollout import RolloutResult
    from .engine import EngineResult
    from .ensemble import EnsembleBuildResult
    from .infer import InferResult
    from .perf.compare import Comparison
    from .perf.results import PerfRun
    from .perf.tune import TuneResult
    from .server import RunningServer
    from .validate import ValidationReport
    from .verify import VerifyReport

PathLike = str | os.PathLike[str]

# True while the CLI calls (its messages keep their flags): see cli_words
_CLI_CALLS: contextvars.ContextVar[bool] = contextvars.ContextVar("tritongen_cli_calls", default=False)


@contextlib.contextmanager
def cli_words() -> Iterator[None]:
    """Within it, the API's errors name the CLI's flags as written (``--force``): the CLI's commands run in it.
    Outside, a Python caller reads the keyword to pass (``force=True``)."""
    token = _CLI_CALLS.set(True)
    try:
        yield
    finally:
        _CLI_CALLS.reset(token)


# The CLI's flag spellings that an API keyword names otherwise, by function: {spelling: what to pass instead}.
CLI_SPELLINGS: dict[str, dict[str, str]] = {
    "build": {
        "input": "inputs=[...]",
        "output": "outputs=[...]",
        "spec": "spec_file=...",
        "instances": "instance_count=N",
        "preferred_batch_size": "preferred_batch_sizes=[...]",
        "queue_delay_us": "max_queue_delay_us=N",
        "queue_policy": "queue_policies=[...]",
        "no_warmup": "warmup=False",
        "max_dim": "max_dynamic_dim=N",
        "dim_range": "dim_ranges=[...]",
        "const": "consts=[...]",
        "state": "states=[...]",
    },
    "deploy": {
        "extra_package": "extra_packages=[...]",
        "from_perf": "perf_results=...",
        "canary_percent": "canary_traffic_percent=N",
    },
    "engine": {"workspace_gb": "workspace_bytes=GB << 30", "opt_level": "optimization_level=N"},
    "infer": {"text": "texts=[...]", "image": "images=[...]", "output_file": "result.save(path)"},
    "perf": {
        "request_rate": "request_rates=[...]",
        "report": "report_dir=...",
        "compare": "the runs or their results.json files to tritongen.report(runs, report_dir) instead",
    },
    "rollout": {"header": "headers={name: value}", "timeout": "timeout_s=..."},
    "rollback": {"header": "headers={name: value}", "timeout": "timeout_s=..."},
    "serve": {
        "timeout_s": "ready_timeout_s=...",
        "docker": "tritongen.docker_steps(repo, ...) instead",
        "ignore_rollout_record": "rollout_record=False",
    },
    "tune": {"dry_run": "write=False", "min_throughput": "min_throughput_rps=..."},
}

# rollout's gate thresholds, by keyword -> GateThresholds field
GATE_LIMITS = {
    "max_latency_ratio": "max_latency_ratio",
    "max_p99_ratio": "max_latency_ratio",  # its earlier name (the gate no longer judges the noisy p99)
    "min_cosine": "min_cosine",
    "min_top1": "min_top1_agreement",
    "max_abs_error": "max_abs_error",
    "max_accuracy_drop": "max_accuracy_drop",
    "gate_requests": "latency_requests",
}
ROLLOUT_ONLY = ("golden", "out", *GATE_LIMITS)  # what only a gate uses: a rollback has none


def _spec_fields(module: str, name: str, *leave_out: str) -> Callable[[], dict[str, Any]]:
    """The fields of spec class ``name`` in ``module`` less ``leave_out`` (what the function sets itself), each
    with its annotation."""

    def fields() -> dict[str, Any]:
        import dataclasses
        import importlib

        from .fields import class_hints

        spec = getattr(importlib.import_module(module, __package__), name)
        hints = class_hints(spec)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(spec) if f.name not in leave_out}

    return fields


def _keyword_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """``func``'s keyword-only parameters, each with its annotation."""
    from .fields import parameter_hints

    hints = parameter_hints(func)
    params = inspect.signature(func).parameters.values()
    return {p.name: hints.get(p.name, Any) for p in params if p.kind is p.KEYWORD_ONLY}


def _build_options() -> dict[str, Any]:
    from .spec import build_spec_from_options

    return _keyword_hints(build_spec_from_options)


def _deploy_options() -> dict[str, Any]:
    from .deploy import TARGETS, target_options
    from .fields import parameter_hints

    options: dict[str, Any] = {"public_key": PathLike | None, "signature": PathLike | None}  # every target's
    for target, write in TARGETS.items():  # what each target takes, as deploy itself decides it
        hints = parameter_hints(write)
        for key in target_options(target):
            options.setdefault(key, hints.get(key, Any))
    return options


def _rollout_options(*leave_out: str) -> Callable[[], dict[str, Any]]:
    spec_fields = _spec_fields(".deploy.rollout", "RolloutSpec", "repo", "name", "to_version", "action", "thresholds")

    def options() -> dict[str, Any]:
        from .deploy.gate import GateThresholds
        from .fields import class_hints

        limits = class_hints(GateThresholds)
        every = {**spec_fields(), **{k: limits.get(field, Any) for k, field in GATE_LIMITS.items()}}
        return {k: v for k, v in every.items() if k not in leave_out}

    return options


def _checked(options: Callable[[], Mapping[str, Any]] | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Check a call of an API function before it does any work: every keyword is one it takes (its own, or for
    ``**options`` the ``options()`` it passes on: a spec's fields, each with its annotation), with a did-you-mean
    or the API's name for a CLI flag's spelling; its own arguments have the types their annotations say
    (:mod:`tritongen.fields`). A :class:`TritongenError` it raises names the CLI's flags by their keywords
    (``pass force=True`` for ``pass --force``), unless the CLI is the caller (:func:`cli_words`)."""

    def wrap(func: Callable[..., Any]) -> Any:
        signature = inspect.signature(func)
        own = [p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]

        def known_options() -> dict[str, Any]:
            from .fields import parameter_hints

            hints = parameter_hints(func)
            return {**{k: hints.get(k, Any) for k in own}, **(options() if options is not None else {})}

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            from .fields import check_value, parameter_hints
            from .names import shown, with_suggestion

            command = func.__name__
            known = checked.__dict__["options"]()
            for key in kwargs:
                if key in known:
                    continue
                if command == "rollback" and key in ROLLOUT_ONLY:
                    if kwargs[key] is None:  # not given, as everywhere
                        continue
                    raise TritongenError(
                        f"rollback() takes no {key}: a rollback switches back without a gate",
                        "leave it out (golden, out and the thresholds are rollout's)",
                    )
                spelling = CLI_SPELLINGS.get(command, {}).get(key)
                if spelling is not None:
                    raise TritongenError(
                        f"{command}() has no option {key} (the CLI's --{key.replace('_', '-')})", f"pass {spelling}"
                    )
                raise TritongenError(
                    f"{command}() has no option '{shown(key)}'",
                    with_suggestion(key, known, f"its options are {', '.join(sorted(known))}"),
                )
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TritongenError(f"{command}(): {exc}", f"see help(tritongen.{command})") from None
            hints = parameter_hints(func)
            for name, value in bound.arguments.items():
                if name in hints:
                    bound.arguments[name] = check_value(value, hints[name], name, command)
            try:
                return func(*bound.args, **bound.kwargs)
            except TritongenError as exc:
                from .fields import in_api_words, in_cli_words

                spellings = CLI_SPELLINGS.get(command, {})
                if not _CLI_CALLS.get():
                    exc.problem, exc.fix = (in_api_words(t, known, spellings) for t in (exc.problem, exc.fix))
                else:  # a spec's own check names its field: the CLI's user typed a flag
                    exc.problem = in_cli_words(exc.problem, spellings)
                exc.args = (exc.message,)
                raise

        checked.__dict__["options"] = known_options
        spelled = CLI_SPELLINGS.get(func.__name__, {})
        if spelled and func.__name__ != "build" and checked.__doc__:  # build's docstring has its whole table
            checked.__doc__ = (
                checked.__doc__.rstrip()
                + "\n\n    The CLI's flags spelled otherwise here::\n\n"
                + "\n".join(f"        --{flag.replace('_', '-'):<24} {keyword}" for flag, keyword in spelled.items())
            )
        return checked

    return wrap


@_checked(_build_options)
def build(
    model: Any, *, example_inputs: Any = None, progress: Progress | None = None, **options: Any
) -> BuildResult | EnsembleBuildResult:
    """Build ``model`` into a validated model folder of a Triton repository and return what was written.

    ``model`` is one of (a path may be a ``str`` or any ``os.PathLike``; the form of a file is read from its
    content, not its name):

    - a file: TorchScript, ``torch.export`` ``.pt2`` (inputs read from its program), an ONNX file (inputs and
      outputs read from its graph), a state_dict (with ``model_factory="pkg.mod:make"``) or, with
      ``allow_pickle=True``, a pickled module;
    - a Hugging Face folder (``config.json`` beside the weights): builds a text- or image-in ensemble;
    - an in-memory ``torch.export.ExportedProgram`` (built as the ``.pt2`` it saves to; ``name`` defaults to
      ``model``);
    - an in-memory ``torch.nn.Module``: then ``example_inputs`` is required, a mapping ``{input name: array}``
      (or a sequence of arrays/tensors, named ``input_0``, ``input_1``, ...) in ``forward()`` order, batch axis
      first when ``max_batch_size`` > 0. The input specs are inferred from them and they feed the parity gate.
      The module is run in eval mode and handed back in the train/eval mode it came in; ``name`` defaults to its
      class name in lower case.

    A Hugging Face folder, ``task``, ``tokenizer``, ``preprocess`` or ``postprocess`` makes an ensemble
    (:class:`~tritongen.ensemble.EnsembleBuildResult`), else one model (:class:`~tritongen.build.BuildResult`).
    Besides ``<repo>/<name>/``, a single-model build writes perf_analyzer / Model Analyzer hand-offs to
    ``handoff/<name>/`` beside the repository (``result.handoff_dir``). ``progress`` receives one line per stage.

    ``options`` stand for ``tritongen build``'s flags; a keyword left out (or ``None``) is a flag not given, and
    the defaults are the CLI's (``--spec`` file values fill in what is not given). Where a flag is repeatable the
    keyword takes a list; the values are the flags' (strings like ``"x:FP32:3,224,224"``) unless said here. An
    item of ``inputs``, ``outputs``, ``dim_ranges``, ``queue_policies`` or ``rate_limiter`` may also be the
    ``--spec`` file's mapping (``{"name": "x", "dtype": "FP32", "dims": [3, 224, 224]}``, ``{"input": "x",
    "axis": 1, "min": 1, "opt": 128, "max": 512}``, ``{"priority": 1, "timeout_us": 5000, "action": "reject"}``,
    ``{"name": "R1", "count": 2, "global": True}``), checked as the file's are::

        keyword                flag                     value
        name                   --name                   str (default: the file or folder name)
        inputs                 --input                  ["x:FP32:3,224,224", ...]
        outputs                --output                 ["logits", ...]
        spec_file              --spec                   YAML spec file path
        sample_inputs          --sample-inputs          .npz path
        max_batch_size         --max-batch-size         int
        target                 --target                 "local" | "onnxruntime" | "tensorrt"
        repo                   --repo                   path (default "model_repository")
        model_factory          --model-factory          "pkg.module:make" or "file.py:make"
        allow_pickle           --allow-pickle           bool
        opset                  --opset                  int
        atol                   --atol                   float
        rtol                   --rtol                   float
        force                  --force                  bool
        new_version            --new-version            bool
        instance_count         --instances              int
        preferred_batch_sizes  --preferred-batch-size   [int, ...]
        max_queue_delay_us     --queue-delay-us         int
        priority_levels        --priority-levels        int
        default_priority       --default-priority       int
        queue_policies         --queue-policy           ["[LEVEL:]timeout_us=T,action=reject|delay,...", ...]
        rate_limiter           --rate-limiter           ["RESOURCE:COUNT[:global]", ...]
        rate_limiter_priority  --rate-limiter-priority  int
        warmup                 --no-warmup              bool: warmup=False is --no-warmup
        task                   --task                   "text-classification" | "feature-extraction" | ...
        tokenizer              --tokenizer              tokenizer folder path
        preprocess             --preprocess             "tokenizer" | "image" | "none" | "file.py"
        postprocess            --postprocess            "mean-pool" | "normalize" | "softmax-topk" | ...
        top_k                  --top-k                  int
        precision              --precision              "fp32" | "fp16" | "int8"
        calib_data             --calib-data             path
        calib_method           --calib-method           "auto" | "minmax" | "entropy" | "percentile"
        min_cosine             --min-cosine             float
        min_top1               --min-top1               float
        max_abs_error          --max-abs-error          {"box": 0.05}, [("box", 0.05)] or ["box=0.05"]
        max_dynamic_dim        --max-dim                int
        dim_ranges             --dim-range              ["INPUT:AXIS:MIN:OPT:MAX", ...]
        consts                 --const                  {"sr": 16000}, [("sr", 16000)] or ["sr=16000"]
        states                 --state                  {"h_in": "h_out"}, [("h_in", "h_out")] or ["h_in:h_out"]
        state_from_attributes  --state-from-attributes  "auto", "_h,_c" or ["_h", "_c"]
        exporter               --exporter               "auto" | "dynamo" | "torchscript"

    Example::

        import tritongen
        result = tritongen.build("resnet.pt", name="resnet", inputs=["x:FP32:3,224,224"], max_batch_size=32)
        print(result.model_dir, result.parity.ok)
    """
    if isinstance(model, (str, os.PathLike)):
        model = _model_path(model)
        if example_inputs is not None:
            raise TritongenError(
                "example_inputs given with a model file",
                "pass sample_inputs='samples.npz' for a file, or pass the nn.Module itself",
            )
        return _build_spec(model, progress, **options)
    return _build_module(model, example_inputs, progress, **options)


def _model_path(model: str | os.PathLike[Any]) -> Path:
    """A model given as a ``str`` or any ``os.PathLike`` (``Path``, ``PurePosixPath``, ...) as a ``Path``."""
    path = os.fspath(model)
    if not isinstance(path, str):
        raise TritongenError(
            f"model path {path!r} is bytes", "pass the model file or folder as a str or a pathlib.Path"
        )
    return Path(path)


def _build_spec(model: Path, progress: Progress | None, loaded: Any = None, **options: Any) -> Any:
    from .fields import check_arguments
    from .spec import build_spec_from_options

    options = check_arguments(build_spec_from_options, options, "build")  # a str where a list goes is one item
    spec = build_spec_from_options(model, **options)
    if spec.is_ensemble:
        if loaded is not None:
            raise TritongenError(
                "an in-memory module cannot be built into an ensemble",
                "save it (torch.jit.save or torch.export.save) and build the file with task/tokenizer",
            )
        from .ensemble import build_ensemble

        return build_ensemble(spec, progress=progress)
    from .build import build as build_model

    if loaded is not None:
        spec = _in_memory_spec(spec, loaded)
    result = build_model(spec, progress=progress, loaded=loaded)
    return _with_handoff(result, progress)


def _with_handoff(result: Any, progress: Progress | None) -> Any:
    """Write the perf_analyzer / Model Analyzer hand-offs beside the repository (:mod:`tritongen.handoff`). The
    model is installed by then: a hand-off that cannot be written is reported, not a failed build."""
    import dataclasses

    from .handoff import handoff_dir_for, handoff_from_model

    repo = result.model_dir.parent
    try:
        made = handoff_from_model(repo, result.spec.name, handoff_dir_for(repo))
    except TritongenError as err:
        if progress is not None:
            progress(f"no perf_analyzer/Model Analyzer hand-offs: {err.message}")
        return result
    return dataclasses.replace(result, handoff_dir=made.folder)


def _in_memory_spec(spec: Any, loaded: Any) -> Any:
    import dataclasses

    return dataclasses.replace(spec, model_path=loaded.source)


def _build_module(module: Any, example_inputs: Any, progress: Progress | None, **options: Any) -> Any:
    try:
        import torch
    except ImportError:
        raise TritongenError("building an in-memory module needs torch", "pip install 'tritongen[convert]'") from None
    if isinstance(module, torch.export.ExportedProgram):
        return _build_program(module, example_inputs, progress, **options)
    if not isinstance(module, torch.nn.Module):
        raise TritongenError(
            f"cannot build a value of type {type(module).__name__}",
            "pass a model file, a Hugging Face folder, a torch.nn.Module or a torch.export.ExportedProgram",
        )
    if example_inputs is None:
        raise TritongenError(
            "an in-memory module needs example_inputs",
            "pass example_inputs={'x': batch} (batch axis first) in forward() order",
        )
    if options.get("sample_inputs") is not None:
        raise TritongenError("sample_inputs given with an in-memory module", "pass the arrays as example_inputs")
    arrays = _example_arrays(example_inputs)
    from .load import LoadedModel
    from .spec import check_model_name

    name = check_model_name(options.pop("name", None) or type(module).__name__.lower())  # before it names a file
    modes = [(m, m.training) for m in module.modules()]  # the caller's module: put back as it was (train or eval)
    try:
        with tempfile.TemporaryDirectory(prefix="tritongen-module-") as tmp:
            from .export import EXAMPLE_INPUTS_NPZ
            from .npz import write_npz

            samples = Path(tmp) / EXAMPLE_INPUTS_NPZ
            write_npz(samples, arrays)
            placeholder = Path(tmp) / f"{name}.module"
            placeholder.touch()  # the spec resolver checks that the model exists
            loaded = LoadedModel(module.eval(), "nn.Module", Path(f"<in-memory {type(module).__name__}>"))
            try:
                return _build_spec(placeholder, progress, loaded=loaded, name=name, sample_inputs=samples, **options)
            except TritongenError as error:  # the arrays were given in memory: no sample file to name
                for attribute in ("problem", "fix", "details"):
                    text = getattr(error, attribute)
                    for file_words in (f"sample file {samples}", f"sample file {samples.name}", str(samples)):
                        text = text.replace(file_words, "example_inputs")
                    setattr(error, attribute, text.replace("the sample file", "example_inputs"))
                raise
    finally:
        for m, training in modes:
            m.training = training


def _build_program(program: Any, example_inputs: Any, progress: Progress | None, **options: Any) -> Any:
    """An in-memory ``ExportedProgram``: saved (``torch.export.save``) into a temporary folder and built as the
    ``.pt2`` file it makes, its inputs read from the program; ``name`` defaults to ``model``."""
    import torch

    from .spec import check_model_name

    if example_inputs is not None:
        raise TritongenError(
            "example_inputs given with an ExportedProgram, which carries its inputs",
            "leave example_inputs out (or pass sample_inputs='samples.npz' for real data)",
        )
    name = check_model_name(options.pop("name", None) or "model")
    with tempfile.TemporaryDirectory(prefix="tritongen-program-") as tmp:
        path = Path(tmp) / f"{name}.pt2"
        with path.open("wb") as fh:
            torch.export.save(program, fh)
        from .load import LoadedModel
        from .load.exported import program_from_archive

        ep, module = program_from_archive(path, bool(options.get("allow_pickle")))  # its checks, as for a file
        loaded = LoadedModel(module, "torch.export", Path("<in-memory ExportedProgram>"), ep)
        return _build_spec(path, progress, loaded=loaded, name=name, **options)


def _example_arrays(example_inputs: Any) -> dict[str, Any]:
    from collections.abc import Iterator

    from .dtypes import numpy_from_value

    if isinstance(example_inputs, Iterator):
        raise TritongenError(
            "example_inputs is an iterator or generator, read only once", "pass a tuple or a dict of tensors"
        )
    if isinstance(example_inputs, Mapping):
        items = list(example_inputs.items())
    elif isinstance(example_inputs, Sequence):
        items = [(f"input_{i}", v) for i, v in enumerate(example_inputs)]
    else:
        items = [("input_0", example_inputs)]
    if not items:
        raise TritongenError("example_inputs is empty", "pass one array per forward() argument")
    arrays = {str(key): numpy_from_value(value, f"example input '{key}'") for key, value in items}
    for key, array in arrays.items():
        if array.dtype == object:  # None, a dict, text: saved, they would be "pickled objects" of a sample file
            kind = type(array.reshape(-1)[0]).__name__ if array.size else "nothing"
            raise TritongenError(
                f"example input '{key}' holds Python objects ({kind}), not numbers", "pass a tensor or a numeric array"
            )
    return arrays


@_checked()
def validate(
    repo: PathLike = "model_repository", *, triton_version: str | None = DEFAULT_TRITON_VERSION
) -> ValidationReport:
    """Check every ``config.pbtxt`` in ``repo`` offline with Triton's own rules (ensembles included).

    TensorRT plans recorded in the manifests must have been built by the TensorRT of Triton ``triton_version``,
    the release that will serve ``repo``: by default the one ``tritongen validate`` assumes
    (:data:`tritongen.plan_compat.DEFAULT_TRITON_VERSION`, the Triton that ``serve`` and ``serve --docker`` run);
    ``None`` skips that check. Returns the report; raises :class:`~tritongen.errors.TritongenError` listing every
    problem.
    """
    from .validate import check_repository

    return check_repository(Path(repo), triton_version=triton_version)


@_checked()
def verify(
    repo: PathLike = "model_repository",
    *,
    allow_unverified: Sequence[str] = (),
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
) -> VerifyReport:
    """Check that every file Triton would load from ``repo`` is listed, with its sha256, in a build manifest.

    ``allow_unverified`` names models written by hand (no manifest). With ``public_key`` the repository's
    signature (``tritongen.sign``; ``signature``: its file, default ``<repo>/.tritongen-signature.sig``) is checked
    first and the report's ``signature`` names it. Without ``public_key`` a signature file that is there goes
    unchecked: the report's ``unchecked_signature`` names it and its ``summary()`` ends with a hint saying so.
    Raises :class:`~tritongen.errors.TritongenError` on a mismatch.
    """
    import dataclasses

    from .verify import check_verified

    if public_key is not None:
        from .signing import check_signature

        checked_signature = check_signature(Path(repo), Path(public_key), _path(signature))  # before any other read
        report = check_verified(Path(repo), allow_unverified=tuple(allow_unverified))
        return dataclasses.replace(report, signature=checked_signature)
    from .signing import unchecked_signature

    report = check_verified(Path(repo), allow_unverified=tuple(allow_unverified))
    # a signed repository checked against its manifests only: the report (and its summary) says so
    return dataclasses.replace(report, unchecked_signature=unchecked_signature(Path(repo), _path(signature)))


@_checked()
def sign(
    repo: PathLike, private_key: PathLike, *, signature: PathLike | None = None, allow_unverified: Sequence[str] = ()
) -> Path:
    """Sign every file in ``repo`` (after it verifies) with a PEM EC private key; returns the signature's path."""
    from .signing import sign_repository

    return sign_repository(Path(repo), Path(private_key), _path(signature), allow_unverified=tuple(allow_unverified))


@_checked(_spec_fields(".server", "ServeSpec", "repo", "docker_host"))
def serve(
    repo: PathLike = "model_repository",
    *,
    verify: bool = True,
    allow_unverified: Sequence[str] = (),
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> contextlib.AbstractContextManager[RunningServer]:
    """Boot a real tritonserver on ``repo``; yields the server once every model is READY, stops it on exit.

    Unless ``verify=False``, the repository is copied into a private folder, the copy is signature-checked (with
    ``public_key``), validated and verified against its manifests, and Triton serves the copy, as ``tritongen
    serve`` does: a file changed after the checks is not what Triton loads. With ``model_control="poll"``
    tritongen polls ``repo`` every ``poll_interval_s``: a change is copied and checked the same way, and only then
    swapped into the copy Triton polls (a change that fails the checks is never there; ``progress`` gets a line
    for each, else the ``tritongen.serve`` logger). ``options`` are
    :class:`~tritongen.server.ServeSpec` fields: ``http_port``, ``grpc_port``, ``metrics_port``, ``host``,
    ``ready_timeout_s``, ``model_control``, ``server_bin``, ``python_env``, ``allocator``, ``stub_blas_threads``,
    ``cpus``, ...

    Example::

        with tritongen.serve("model_repository") as server:
            print(tritongen.infer("resnet", url=server.grpc_url).outputs)

    Outside a ``with`` block (a notebook): ``server = tritongen.serve(repo).__enter__()``, later ``server.stop()``,
    which also removes the checked copy. On the main thread, a SIGTERM (``docker stop``, systemd, ``kill``) while
    the server boots or runs raises :class:`~tritongen.server.Terminated` (a ``KeyboardInterrupt``) where Python
    would end the process at once, so the server is stopped and its copy removed first (a SIGTERM handler of
    your own is left alone).
    """
    from .server import ServeSpec

    spec = ServeSpec(repo=Path(repo), **_given(options))  # its options are checked at the call, before the repository
    if not verify and (public_key is not None or signature is not None):
        raise TritongenError(
            "verify=False serves the repository unchecked: its signature would not be checked",
            "leave verify on to check the signature with public_key, or leave public_key and signature out",
        )
    if verify:  # a repository that is not there is refused at the call too, before anything is said to be checked
        from .validate import check_repository_folder

        check_repository_folder(Path(repo).resolve())
    return _Serving(_serving(spec, repo, verify, allow_unverified, public_key, signature, progress))


class _NotStarted(TritongenError, AttributeError):
    """A server's attribute asked of what :func:`serve` returns, before it started (an AttributeError too, so
    ``hasattr`` keeps working)."""


class _Serving(contextlib.AbstractContextManager):
    """What :func:`serve` returns: the server starts on ``__enter__``; its attributes asked before then get a fix."""

    def __init__(self, manager: contextlib.AbstractContextManager[RunningServer]) -> None:
        self._manager = manager
        self._done = False
        self._entered = False

    def __enter__(self) -> RunningServer:
        if self._entered:  # contextlib's own words: "'_GeneratorContextManager' object has no attribute 'args'"
            raise TritongenError(
                "this tritongen.serve(...) was started already (each call starts one server, once)",
                "call tritongen.serve(repo, ...) again for another server (stop the first with server.stop())",
            )
        self._entered = True
        server = self._manager.__enter__()
        # tritongen.serve(repo).__enter__() keeps no reference to this: freed, its generator would be closed and the
        # server stopped at once. The server holds it; its stop() closes it (the SIGTERM handler goes back too).
        server.owner = self
        server.cleanups.append(self._close)
        return server

    def __exit__(self, *exc: Any) -> bool | None:
        if self._done:
            return None
        self._done = True
        return self._manager.__exit__(*exc)

    def _close(self) -> None:
        """``server.stop()`` outside a ``with`` block: the block's exit, once."""
        if not self._done:
            self._done = True
            self._manager.__exit__(None, None, None)

    def __getattr__(self, name: str) -> Any:
        raise _NotStarted(
            f"tritongen.serve() returns a context manager that starts the server, not the server (asked for .{name})",
            f"use it in a with block: with tritongen.serve(repo) as server: server.{name} (or server = "
            "tritongen.serve(repo).__enter__(), then server.stop())",
        )


@contextlib.contextmanager
def _serving(
    spec: Any,
    repo: PathLike,
    verify: bool,
    allow_unverified: Sequence[str],
    public_key: PathLike | None,
    signature: PathLike | None,
    progress: Progress | None = None,
) -> Iterator[RunningServer]:
    from .server import server_from_repository, stop_on_sigterm
    from .server.admin import SIGNING_KEY_NAME
    from .server.snapshot import (
        snapshot_root,
    )
    from .signing import check_public_key
    from .validate import check_repository_folder

    if not verify:
        with stop_on_sigterm(), server_from_repository(spec) as server:
            yield server
        return
    # The checks and Triton read the same bytes: a private copy of the repository, checked, then served.
    given = Path(repo).resolve()  # once: a later chdir of the caller changes nothing
    key = None if public_key is None else Path(public_key).expanduser().resolve()
    signed = None if signature is None else Path(signature).expanduser().resolve()
    check_repository_folder(given)  # again: serve() checked it at the call, and may be entered much later

    kept = None if key is None else check_public_key(key)
    root = snapshot_root(given)
    key_copy = root / SIGNING_KEY_NAME  # the key serve was started with, for every check (poll's too) and rollout

    check = _serve_check(given, allow_unverified, key, key_copy, signed, poll=spec.model_control == "poll")
    with stop_on_sigterm():
        yield from _checked_serving(spec, given, root, key, key_copy, kept, signed, check, progress)


def _serve_check(
    given: Path,
    allow_unverified: Sequence[str],
    key: Path | None,
    key_copy: Path,
    signed: Path | None,
    poll: bool = False,
) -> Callable[[Path], None]:
    """What serve checks in each copy it makes of ``given``: the first (before Triton starts) and those of a
    poll's changes. A name ``allow_unverified`` gives that is no model folder is refused at the start, except in
    poll mode (a hand-written model may be added, or removed, while the server runs)."""
    from .server.snapshot import with_repository_words

    started: list[bool] = []

    def check(copy: Path) -> None:
        present = [n for n in allow_unverified if (copy / n).is_dir()]
        allowed = present if started or poll else allow_unverified
        started.append(True)
        try:
            check_servable(
                copy,
                allow_unverified=allowed,
                public_key=None if key is None else key_copy,
                signature=_in_snapshot(signed, given, copy),
            )
        except TritongenError as error:  # words about the key's copy name the key given
            raise error if key is None else with_repository_words(error, key_copy, key) from None

    return check


def _checked_serving(
    spec: Any,
    given: Path,
    root: Path,
    key: Path | None,
    key_copy: Path,
    kept: bytes | None,
    signed: Path | None,
    check: Callable[[Path], None],
    progress: Progress | None,
) -> Iterator[RunningServer]:
    """:func:`_serving` once the inputs are checked: the private copy, checked, pinned and served (removed after)."""
    import dataclasses
    import shutil

    from .server import server_from_repository
    from .server.snapshot import CheckedPoll, fingerprint, served_copy, snapshot_from_repository, with_repository_words

    try:
        if kept is not None:
            key_copy.write_bytes(kept)
        seen = fingerprint(given)  # before the copy: a change made while it is copied is looked at again
        snapshot = snapshot_from_repository(given, served_copy(root, given))
        try:
            check(snapshot)
            # after the checks, in the copy (the repository is not touched); not on a signed repository
            pinned = tuple(
                line.replace(str(snapshot), str(given))
                for line in _pin_recorded(spec, snapshot, signed=key is not None)
            )
            server = server_from_repository(dataclasses.replace(spec, repo=snapshot), signing_key=kept)
        except TritongenError as error:  # a check's or the server's words about the copy name the repository
            raise with_repository_words(error, snapshot, spec.repo) from None
        with server:
            server.rollout_notes = pinned
            checked = None
            if spec.model_control == "poll":  # Triton polls the copy; tritongen polls the repository and checks
                checked = CheckedPoll(given, snapshot, seen, check, spec.poll_interval_s, progress or _poll_log)
                server.checked_poll = checked.start()
                server.cleanups.append(checked.stop)
            # server.stop() outside a with block (a notebook) removes the copy too
            server.cleanups.append(lambda: shutil.rmtree(root, ignore_errors=True))
            try:
                yield server
            finally:
                if checked is not None:
                    checked.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pin_recorded(spec: Any, snapshot: Path, signed: bool) -> tuple[str, ...]:
    """Each model's recorded live version pinned in the checked copy (:mod:`tritongen.deploy.rollout_record`);
    not in poll mode (a change swapped into the copy would bring config.pbtxt's versions back)."""
    if spec.model_control == "poll" or not spec.rollout_record:
        return ()
    from .deploy.rollout_record import pin_recorded_versions

    return tuple(
        pin_recorded_versions(snapshot, signed=signed, repo=spec.repo, explicit=spec.model_control == "explicit")
    )


def _poll_log(line: str) -> None:
    import logging

    logging.getLogger("tritongen.serve").warning(line)


def _in_snapshot(signature: Path | None, repo: Path, snapshot: Path) -> Path | None:
    """A signature file inside ``repo`` (at its top) read from the copy; one outside it from where it is (both
    paths resolved)."""
    if signature is None:
        return None
    try:
        return snapshot / signature.relative_to(repo)
    except ValueError:
        return signature


@_checked(_spec_fields(".server", "ServeSpec", "repo", "docker_host"))
def docker_steps(
    repo: PathLike = "model_repository",
    *,
    allow_unverified: Sequence[str] = (),
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
    **options: Any,
) -> DockerSteps:
    """How to serve ``repo`` with NGC's Triton image instead of this machine's server (``tritongen serve
    --docker``): the ``docker run`` line where the stock image can serve every model, else the deploy steps that
    make an image that can. The repository is checked first as :func:`serve` checks it, with plans judged against
    the image's Triton release. ``options`` are :class:`~tritongen.server.ServeSpec` fields (ports, ``host``,
    ...); ``.text()`` is what the CLI prints."""
    from .deploy.docker import docker_steps_from_repository
    from .server import ServeSpec

    spec = ServeSpec(repo=Path(repo).resolve(), docker_host=True, **_given(options))  # CPUs: the Docker host's
    check_servable(
        repo,
        allow_unverified=allow_unverified,
        public_key=public_key,
        signature=signature,
        triton_version=DEFAULT_TRITON_VERSION,  # the image's release
    )
    return docker_steps_from_repository(
        spec, allow_unverified=tuple(allow_unverified), public_key=_path(public_key), signature=_path(signature)
    )


@_checked()
def check_servable(
    repo: PathLike,
    *,
    allow_unverified: Sequence[str] = (),
    public_key: PathLike | None = None,
    signature: PathLike | None = None,
    triton_version: str | None = None,
) -> None:
    """What :func:`serve` checks before booting: signature (with ``public_key``), Triton's rules, manifests."""
    if public_key is not None:
        from .signing import check_signature

        check_signature(Path(repo), Path(public_key), _path(signature))  # first: nothing else reads the files before
    validate(repo, triton_version=triton_version)
    verify(repo, allow_unverified=allow_unverified)  # the signature (if any) was checked above


@_checked(_spec_fields(".infer", "InferSpec", "name"))
def infer(name: str, **options: Any) -> InferResult:
    """Send inputs to model ``name`` on a running server and return its outputs (and, with ``check=True``, the
    comparison with the build's saved PyTorch reference). ``name`` may be the model's folder
    (``"model_repository/resnet"``), which names its repository too.

    ``options`` are :class:`~tritongen.infer.InferSpec` fields: ``url``, ``protocol`` (``grpc``/``http``; default:
    the ``url``'s ``http://`` or ``grpc://``, else ``$TRITONGEN_URL``'s, else gRPC),
    ``repo``, ``input_file`` (an ``.npz`` named by input, or one ``.npy`` for a one-input model), ``inputs``
    (arrays in memory: ``{"x": array}``), ``check``, ``texts``, ``images``, ``timeout_s``, ``model_version``, and for a
    stateful model (``build(..., states=...)``) ``sequence=True`` to stream ``input_file`` in chunks as one
    sequence, ``chunk_size`` (default: the first input's fixed size) and ``sequence_id`` (its correlation ID,
    default 1). ``expected`` (an ``.npz`` of the outputs you expect, by output name; those it leaves out are not
    compared and ``result.uncompared`` names them) is compared within ``atol`` + ``rtol`` x ``|expected|``
    (default 1e-4 and 1e-3, as the build's parity gate).

    A comparison that fails does not raise: ``result.check.ok`` is False and ``result.text()`` ends in MISMATCH
    (``tritongen infer`` exits 1 then). Anything that stops the request raises :class:`TritongenError`.
    """
    from .infer import InferSpec, infer_model, model_from_folder

    options = _given(options)
    name, repo = model_from_folder(name, options.get("repo"))  # "model_repository/resnet": the name and repo
    if repo is not None:
        options["repo"] = repo
    return infer_model(InferSpec(name=name, **options))


@_checked(_spec_fields(".perf.spec", "PerfSpec", "model"))
def perf(model: str, *, progress: Progress | None = None, **options: Any) -> PerfRun:
    """Load-test ``model`` on a running server: throughput, latency percentiles, server-side breakdown.

    ``options`` are :class:`~tritongen.perf.PerfSpec` fields (``concurrency``, ``request_rates``, ``engine``,
    ``duration_s``, ``url``, ...). With ``report_dir`` (checked before any load is sent) the run's report.html,
    results.json and results.csv are written there, as ``tritongen perf --report DIR`` writes them (a partial run's
    too); :func:`report` writes one for several runs. A load level where every request failed raises
    :class:`TritongenError` naming the first failure (after the report is written; the error's ``run`` holds the
    figures); a level with some answers is returned with its failures counted in its ``errors``.
    """
    from .perf import PerfSpec, perf_from_spec
    from .perf.report import report_from_runs
    from .perf.results import failed_level_error

    spec = PerfSpec(model=model, **_given(options))
    run = perf_from_spec(spec, progress=progress)
    if spec.report_dir is not None:
        try:
            report_from_runs([run], spec.report_dir, force=spec.force)
        except TritongenError as failed:  # the folder changed during the run: the figures are not lost
            from .perf.results import table_from_run

            raise TritongenError(
                f"the run finished, but its report could not be written: {failed.problem}",
                failed.fix,
                details=table_from_run(run),
            ) from None
    no_answers = failed_level_error(run, spec.report_dir)
    if no_answers is not None:
        raise no_answers
    return run


@_checked()
def report(runs: Sequence[Any], report_dir: PathLike, *, title: str | None = None, force: bool = False) -> Path:
    """Write ``report.html`` into ``report_dir`` (created if missing) for ``runs``: runs :func:`perf` returned, or
    ``results.json`` files an earlier ``tritongen perf --report`` wrote (``tritongen perf --compare A.json B.json
    --report DIR`` is ``report(["A.json", "B.json"], "DIR")``); with one run its ``results.json`` and
    ``results.csv`` too. An earlier report in ``report_dir`` is replaced only with ``force``. Returns the report's
    path."""
    from .perf.compare import check_comparison_dir, runs_from_sources
    from .perf.report import report_from_runs

    if not runs:
        raise TritongenError("report() got no runs", "pass the runs perf() returned, or results.json files")
    check_comparison_dir(runs, Path(report_dir))
    return report_from_runs(runs_from_sources(runs, "report"), Path(report_dir), title, force)


@_checked()
def compare(
    runs: Sequence[Any], report_dir: PathLike | None = None, *, title: str | None = None, force: bool = False
) -> Comparison:
    """Compare finished runs: runs :func:`perf` returned, or ``results.json`` files and report folders an earlier
    ``tritongen perf --report`` wrote (``tritongen perf --compare A B [--report DIR]`` is ``compare(["A", "B"],
    "DIR")``). Returns a :class:`~tritongen.perf.compare.Comparison`: the runs (named apart where two share a
    name), one line for each load where a run's served config or throughput differs from the first run's (and
    whether the server's CPU per request accounts for it), and ``report.html``'s path where ``report_dir`` is given;
    ``text()`` is what the CLI prints."""
    from .perf.compare import comparison_from_runs

    return comparison_from_runs(runs, Path(report_dir) if report_dir is not None else None, title, force)


@_checked(_spec_fields(".perf.tune", "TuneSpec", "model_dir", "max_p99_ms"))
def tune(model_dir: PathLike, *, max_p99_ms: float, progress: Progress | None = None, **options: Any) -> TuneResult:
    """Search instance count, queue delay and batch sizes for ``model_dir`` (``<repository>/<model>``) under a
    p99 bound on a server with explicit model control; writes the best config unless ``write=False``.

    ``options`` are :class:`~tritongen.perf.tune.TuneSpec` fields.
    """
    from .perf.tune import TuneSpec, tune_model

    spec = TuneSpec(model_dir=Path(model_dir), max_p99_ms=max_p99_ms, **_given(options))
    return tune_model(spec, progress=progress)


@_checked()
def engine(
    repo: PathLike = "model_repository",
    *,
    workspace_bytes: int | None = None,
    optimization_level: int | None = None,
    per_cc: bool = False,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> list[EngineResult]:
    """Build ``model.plan`` for every model in ``repo`` prepared by ``build(..., target="tensorrt")`` (``repo`` may
    be one model's folder, ``REPO/NAME``: that model only).

    ``workspace_bytes``: the builder's workspace limit (``tritongen engine --workspace-gb`` times 2**30; default:
    the model's ``engine.json``, 4 GiB). ``optimization_level``: the builder optimization level 0-5
    (``--opt-level``; default: ``engine.json``'s, 3). ``per_cc``: save ``model.<cc>.plan`` and list it in the
    config's ``cc_model_filenames``, so one repository carries plans for several GPU generations (``--per-cc``).
    A model whose recorded plan is current (this GPU generation, this TensorRT) is skipped unless ``rebuild``.
    ``progress`` receives one line per model. Returns one :class:`~tritongen.engine.EngineResult` per plan built.
    Needs TensorRT and a GPU; raises :class:`~tritongen.errors.TritongenError` saying so where they are missing.
    """
    from .engine import engines_from_repository

    return engines_from_repository(
        Path(repo),
        workspace_bytes=workspace_bytes,
        optimization_level=optimization_level,
        per_cc=per_cc,
        rebuild=rebuild,
        progress=progress,
    )


@_checked()
def lint(path: PathLike = "model_repository") -> list[Any]:
    """Check an ONNX file, every model of a repository, or one model's folder (``REPO/NAME``) for TensorRT
    offline; one report per model."""
    import dataclasses

    from .lint import lint_from_onnx, lint_targets, not_for_tensorrt

    return [
        dataclasses.replace(lint_from_onnx(onnx_path, profiles), not_for_tensorrt=not_for_tensorrt(onnx_path))
        for onnx_path, profiles in lint_targets(Path(path))
    ]


@_checked(_deploy_options)
def deploy(repo: PathLike, *, to: str, out: PathLike, **options: Any) -> Any:
    """Write what serves ``repo`` on ``to`` (``docker``, ``kubernetes`` or ``kserve``) into ``out``.

    ``options`` are the keyword forms of ``tritongen deploy``'s flags (``force``, ``ngc_version``, ``host``,
    ``extra_packages``, ``perf_results``, ``slo_p99_ms``, ``peak_rps``, ...). With ``public_key`` the repository's
    signature (``signature``: its file) is checked first, as ``verify`` checks it: a bundle's thresholds come from
    files in the repository (``config.pbtxt``, tune.json), which its manifests alone do not vouch for. Returns the
    target's typed result (it has ``summary()``).
    """
    from .deploy import bundle_from_repository

    public_key, signature = options.pop("public_key", None), options.pop("signature", None)
    signed = None
    if public_key is not None:
        from .signing import check_signature, signed_digests

        check_signature(Path(repo), Path(public_key), _path(signature))  # before anything else reads the repository
        # what the bundle verifies (and reads: configs, tune records) is then held to these digests
        signed = signed_digests(Path(repo), Path(public_key), _path(signature))
    elif signature is not None:
        raise TritongenError("--signature without --public-key checks nothing", "pass --public-key with it")
    return bundle_from_repository(Path(repo), to, Path(out), signed_digests=signed, **options)


@_checked(_rollout_options())
def rollout(
    repo: PathLike, name: str, *, to_version: int, progress: Progress | None = None, **options: Any
) -> RolloutResult:
    """Roll model ``name`` of ``repo`` out to ``to_version`` on a running Triton with explicit model control.

    The new version is loaded beside the live one as a candidate, judged on the served endpoint against the
    live one (a golden set: ``golden``, default the build's samples), and only within the thresholds made the
    version every request gets; the old version then drains and unloads. ``options``: ``url``, ``protocol``,
    ``golden``, ``out`` (folder for ``comparison.json``), ``headers``, ``allow_unverified``, ``timeout_s``,
    ``public_key`` and ``signature`` (the files sent must be the signed ones; default: the key of a local server
    that ``serve(public_key=...)`` started, found by its port) and the thresholds ``max_latency_ratio`` (earlier
    ``max_p99_ratio``; refused only when the candidate is consistently slower: :mod:`tritongen.deploy.gate`),
    ``min_cosine``, ``min_top1``, ``max_abs_error``, ``max_accuracy_drop``, ``gate_requests``. A refused version
    leaves the live one serving: ``result.promoted`` is False and ``result.gate`` says why. The model folder's
    ``tritongen-rollout.json`` records it (see ``rollback``).

    Example::

        result = tritongen.rollout("model_repository", "resnet", to_version=2, url="127.0.0.1:8001")
        print(result.summary())
    """
    return _rollout(repo, name, "rollout", to_version, progress, options)


@_checked(_rollout_options(*ROLLOUT_ONLY))
def rollback(
    repo: PathLike, name: str, *, to_version: int | None = None, progress: Progress | None = None, **options: Any
) -> RolloutResult:
    """Return model ``name`` to the version that served before its last rollout (or ``to_version``), the same
    way a rollout switches (no gate). ``options``: ``url``, ``protocol``, ``headers``, ``allow_unverified``,
    ``timeout_s``, ``public_key``, ``signature``, ``force`` (a version whose rollout the gate refused, as the
    model's rollout record says, is refused unless ``force=True``)."""
    return _rollout(repo, name, "rollback", to_version, progress, options)


def _rollout(
    repo: PathLike, name: str, action: str, to_version: int | None, progress: Progress | None, options: dict
) -> RolloutResult:
    from .deploy.gate import GateThresholds
    from .deploy.rollout import RolloutSpec, rollout_from_repository

    if options.get("max_p99_ratio") is not None and options.get("max_latency_ratio") is not None:
        raise TritongenError(
            "both max_latency_ratio and max_p99_ratio are given (the second is the first's earlier name)",
            "pass max_latency_ratio only",
        )
    given = {k: options.pop(k) for k in list(options) if k in GATE_LIMITS}
    limits = {GATE_LIMITS[k]: v for k, v in given.items() if v is not None}
    thresholds = GateThresholds(**_given(limits))  # None: the default
    spec = RolloutSpec(
        repo=Path(repo),
        name=name,
        to_version=to_version,
        action=action,
        thresholds=thresholds,
        **_given(options),
    )
    return rollout_from_repository(spec, progress)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without those given as None (the CLI's "not given"; for the library too, as ``build`` takes
    them): the spec's defaults stand, and it settles ``protocol`` and ``url``
    (:func:`tritongen.client.spec_protocol`)."""
    return {k: v for k, v in options.items() if v is not None}


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)
