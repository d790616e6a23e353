"""TensorRT engines: prepared ONNX (precision already in the graph) -> ``model.plan``, through Polygraphy.

Where TensorRT is missing, ``build --target tensorrt`` stops after :func:`engine_plan_from_spec`: it writes
the prepared ONNX and ``engine.json`` (profiles, precision, build settings) into the model's version folder
under ``tritongen/``. ``tritongen engine REPO`` then runs :func:`engine_from_onnx` for every such model on a
host with TensorRT (the engine-builder image ``tritongen deploy REPO --to docker`` writes): a strongly typed
network, so the FP16 casts and INT8 Q/DQ in the ONNX decide the precision (TensorRT 10 deprecated and TensorRT 11
removed the FP16/INT8 builder flags and implicit calibration).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .files import refuse_linked_folders, replace_file
from .layout import (
    ARTIFACT_DIR,
    CONFIG_NAME,
    ENGINE_PLAN_NAME,
    PLAN_FILENAME,
    PREPARED_ONNX,
    TIMING_CACHE_NAME,
    config_text,
    is_model_folder,
    manifest_path,
    version_of_folder,
)

DEFAULT_WORKSPACE_BYTES = 4 << 30
DEFAULT_OPT_LEVEL = 3

Shape = tuple[int, ...]
Profile = dict[str, dict[str, list[int]]]  # input -> {"min": shape, "opt": shape, "max": shape}


def profiles_from_spec(spec: Any) -> list[Profile]:
    """One optimization profile: batch 1..max_batch_size (opt: the largest preferred size), every -1 dim its
    --dim-range MIN/OPT/MAX, or 1/OPT/max_dynamic_dim without one (:mod:`tritongen.dim_ranges`)."""
    from .config import preferred_batch_sizes
    from .dim_ranges import ranges_from_spec

    ranges = {(r.input, r.axis): r for r in ranges_from_spec(spec)}
    profile: Profile = {}
    for t in spec.inputs:
        picked = [ranges.get((t.name, i)) for i in range(len(t.shape))]  # the model's own shape: () for a scalar
        lo = [d if r is None else (r.min if r.explicit else 1) for d, r in zip(t.shape, picked)]
        opt = [d if r is None else r.opt for d, r in zip(t.shape, picked)]
        hi = [d if r is None else r.max for d, r in zip(t.shape, picked)]
        if spec.batched:
            best = max(preferred_batch_sizes(spec) or (spec.max_batch_size,))
            lo, opt, hi = [1] + lo, [best] + opt, [spec.max_batch_size] + hi
        profile[t.name] = {"min": lo, "opt": opt, "max": hi}
    return [profile]


def engine_plan_from_spec(spec: Any, onnx_rel: str, precision: str) -> dict[str, Any]:
    """What ``tritongen engine`` needs on the GPU host (written as ``engine.json``)."""
    return {
        "onnx": onnx_rel,
        "precision": precision,  # already in the graph; informational
        "strongly_typed": True,
        "profiles": profiles_from_spec(spec),
        "max_batch_size": spec.max_batch_size,
        "workspace_bytes": DEFAULT_WORKSPACE_BYTES,
        "builder_optimization_level": DEFAULT_OPT_LEVEL,
        "plan": PLAN_FILENAME,
    }


def prepared_onnx_from_onnx(version_dir: Path, spec: Any) -> dict[str, Any]:
    """``--target tensorrt``: move ``<version>/model.onnx`` (+ data) to ``<version>/tritongen/``, write
    ``engine.json`` beside it and lint it against the profiles; lint errors stop the build."""
    from .lint import lint_from_onnx  # noqa: PLC0415
    from .precision.stage import move_onnx  # noqa: PLC0415

    prepared = move_onnx(version_dir / PREPARED_ONNX, version_dir / ARTIFACT_DIR)
    plan = engine_plan_from_spec(spec, PREPARED_ONNX, spec.precision)
    (version_dir / ARTIFACT_DIR / ENGINE_PLAN_NAME).write_text(json.dumps(plan, indent=2) + "\n")
    lint = lint_from_onnx(prepared, plan["profiles"])
    if not lint.ok:
        raise TritongenError(
            "the prepared ONNX will not pass TensorRT's ONNX parser",
            "see the lint findings below; change the model or use --target onnxruntime",
            details=lint.text(),
        )
    return {
        "engine_plan": f"{ARTIFACT_DIR}/{ENGINE_PLAN_NAME}",
        "lint": lint.to_dict(),
        "tensorrt_version": tensorrt_version(),
    }


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt  # noqa: PLC0415

        return str(trt.__version__)
    except Exception:  # missing, or the bindings without libnvinfer
        return None


def require_tensorrt() -> str:
    version = tensorrt_version()
    if version is None:
        raise TritongenError(
            "TensorRT is not installed here, so no engine can be built",
            "run `tritongen engine` on a GPU host with TensorRT, e.g. in the "
            "engine-builder image `tritongen deploy REPO --to docker` writes "
            "(nvcr.io/nvidia/tensorrt:<YY.MM>-py3 with the same YY.MM as the Triton image)",
        )
    return version


def compute_capability() -> str:
    """The current GPU's compute capability as Triton's ``cc_model_filenames`` keys it (``"8.0"``)."""
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415
    except Exception:
        try:
            from cuda import cudart  # noqa: PLC0415
        except Exception:
            cudart = None
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            return f"{props.major}.{props.minor}"
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except Exception:
        pass
    import subprocess  # noqa: PLC0415

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    raise TritongenError("cannot tell this GPU's compute capability", "install cuda-python, or make nvidia-smi work")


@dataclass(frozen=True)
class EngineResult:
    plan_path: Path
    tensorrt_version: str
    compute_capability: str
    build_s: float

    def text(self) -> str:
        """What ``tritongen engine`` prints for this plan."""
        return (
            f"built {self.plan_path} (TensorRT {self.tensorrt_version}, compute capability "
            f"{self.compute_capability}) in {self.build_s:.1f}s"
        )


def engine_from_onnx(
    onnx_path: Path,
    plan_path: Path,
    profiles: list[Profile],
    *,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    optimization_level: int = DEFAULT_OPT_LEVEL,
    timing_cache: Path | None = None,
) -> EngineResult:
    """Build a strongly typed engine with Polygraphy and save it to ``plan_path``."""
    version = require_tensorrt()
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, engine_from_network, save_engine  # noqa: PLC0415
    from polygraphy.backend.trt import Profile as TrtProfile

    trt_profiles = []
    for p in profiles:
        prof = TrtProfile()
        for name, shapes in p.items():
            prof.add(name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        trt_profiles.append(prof)
    start = time.perf_counter()
    try:
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
        import tensorrt as trt  # noqa: PLC0415

        config = CreateConfig(
            profiles=trt_profiles,
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_bytes)},
            builder_optimization_level=optimization_level,
            load_timing_cache=str(timing_cache) if timing_cache and timing_cache.is_file() else None,
        )
        engine = engine_from_network(
            network, config=config, save_timing_cache=str(timing_cache) if timing_cache else None
        )
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        save_engine(engine, str(plan_path))
    except TritongenError:
        raise
    except Exception as exc:
        raise TritongenError(
            f"TensorRT could not build {onnx_path}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}",
            "run `tritongen lint` on the model, check the profiles in engine.json, rerun with --debug",
        ) from None
    return EngineResult(plan_path, version, compute_capability(), round(time.perf_counter() - start, 3))


def engine_models(repo: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    """(model folder, version folder, engine.json content) for every model prepared for TensorRT in ``repo``, or
    for the one model whose folder ``repo`` is (``REPO/NAME``, holding ``config.pbtxt``)."""
    from .lint import engine_plan_from_file  # noqa: PLC0415

    repo = Path(repo)
    pattern = f"*/{ARTIFACT_DIR}/{ENGINE_PLAN_NAME}"
    found = []
    for plan in sorted(repo.glob(pattern if is_model_folder(repo) else f"*/{pattern}")):
        version_dir = plan.parent.parent
        if version_of_folder(version_dir.name) is not None:
            found.append((version_dir.parent, version_dir, engine_plan_from_file(plan)))
    return found


def _not_prepared(path: Path) -> TritongenError:
    """The error for a repository, or a model folder, with no model prepared for TensorRT."""
    fix = (
        "build with `tritongen build ... --target tensorrt` first "
        f"(it writes <model>/<version>/{ARTIFACT_DIR}/{ENGINE_PLAN_NAME})"
    )
    if not is_model_folder(path):
        return TritongenError(f"no model in {path} is prepared for TensorRT", fix)
    step = path.parent / f"{path.name}_model"
    if is_model_folder(step) and engine_models(step):
        fix = f"its model step is the one to build: tritongen engine {step}"
    return TritongenError(f"model {path.name} ({path}) is not prepared for TensorRT", fix)


def token_profile_warnings(model_dir: Path, profiles: list[Profile]) -> list[str]:
    """For the model step ``<ensemble>_model`` of a text ensemble: a warning for each profile that ends an input
    below the ``max_length`` its tokenizer step (``<ensemble>_preprocess``) truncates at, since the engine refuses
    every longer text (builds before the profile took ``max_length`` wrote ``--max-dim``'s default 128 there)."""
    from .validate import config_from_text  # noqa: PLC0415

    name = model_dir.name
    config = model_dir.parent / f"{name.removesuffix('_model')}_preprocess" / CONFIG_NAME
    if not name.endswith("_model") or not config.is_file():
        return []
    try:
        parameters = config_from_text(config_text(config), str(config)).parameters
        max_length = int(parameters["max_length"].string_value) if "max_length" in parameters else 0
    except (TritongenError, ValueError):
        return []
    out = []
    for k, profile in enumerate(profiles):
        for tensor, shapes in profile.items() if isinstance(profile, dict) else ():
            top_dims = shapes.get("max") if isinstance(shapes, dict) else None
            sizes = [d for d in top_dims[1:] if type(d) is int] if isinstance(top_dims, list) else []
            top = min(sizes or [max_length])  # the dims after the batch dimension
            if top < max_length:
                out.append(
                    f"warning: {name}'s TensorRT profile {k} takes {tensor} up to {top} tokens, but "
                    f"{config.parent.name} sends up to {max_length} (its tokenizer's max_length): the engine will "
                    f"refuse texts of {top + 1} to {max_length} tokens; rebuild the ensemble with --max-dim "
                    f"{max_length} (or a --dim-range ending at {max_length})"
                )
                break
    return out


def plan_is_current(engines: Any, version_dir: Path, compute_capability: str, tensorrt_version: str) -> bool:
    """Whether the manifest's ``engines`` record a plan for this GPU generation, built by this TensorRT, whose file
    is still the one recorded (same sha256): building it again would give nothing new."""
    from .manifest import sha256_file  # noqa: PLC0415

    entry = engines.get(compute_capability) if isinstance(engines, dict) else None
    if not isinstance(entry, dict) or entry.get("tensorrt_version") != tensorrt_version:
        return False
    plan = version_dir / str(entry.get("plan", ""))
    return plan.is_file() and plan.parent == version_dir and sha256_file(plan) == entry.get("sha256")


MAX_WORKSPACE_GB = 1024


def workspace_bytes_from_gb(gb: float) -> int:
    """``--workspace-gb`` as bytes: a size above 0 and at most :data:`MAX_WORKSPACE_GB` GiB (NaN, infinities and 0,
    which meant "the default" without a word, are refused)."""
    if not (math.isfinite(gb) and 0 < gb <= MAX_WORKSPACE_GB):
        raise TritongenError(
            f"--workspace-gb {gb:g} is not a size above 0 and at most {MAX_WORKSPACE_GB} GiB",
            "pass the builder's workspace limit in GiB, e.g. --workspace-gb 4 (or leave it out: engine.json's)",
        )
    return max(1, int(gb * 2**30))


def engines_from_repository(
    repo: Path,
    *,
    workspace_bytes: int | None = None,
    optimization_level: int | None = None,
    per_cc: bool = False,
    rebuild: bool = False,
    progress=None,
) -> list[EngineResult]:
    """Build ``model.plan`` for every prepared model in ``repo`` (or for the one model whose folder ``repo`` is,
    ``REPO/NAME``) and record TensorRT version + compute capability.

    With ``per_cc`` the plan is saved as ``model.<cc>.plan`` and listed in the config's ``cc_model_filenames``
    so one repository can carry plans for several GPU generations. A model whose manifest records a current
    plan (this GPU generation, this TensorRT, the recorded file) is skipped unless ``rebuild``.
    """
    from .manifest import load_manifest

    if workspace_bytes is not None and (
        isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, int) or not 0 < workspace_bytes <= 1 << 40
    ):
        raise TritongenError(
            f"workspace_bytes {workspace_bytes!r} is not a byte count above 0 and at most {MAX_WORKSPACE_GB} GiB",
            "pass the builder's workspace limit in bytes, e.g. 4 << 30",
        )
    say = progress or (lambda message: None)
    repo = Path(repo)
    models = engine_models(repo)
    if not models:
        raise _not_prepared(repo)
    if is_model_folder(repo):  # REPO/NAME: that one model; the timing cache stays the repository's
        repo = repo.parent
    for model_dir, _, plan in models:
        for line in token_profile_warnings(model_dir, plan["profiles"]):
            say(line)
    for model_dir, version_dir, _ in models:  # before anything is built or written: nothing through a link
        refuse_linked_folders(version_dir / ARTIFACT_DIR, model_dir)
    trt_version = require_tensorrt()
    results = []
    for model_dir, version_dir, plan in models:
        onnx_path = version_dir / ARTIFACT_DIR / plan["onnx"]
        cc = compute_capability()
        manifest = manifest_path(model_dir, int(version_dir.name))
        engines = load_manifest(manifest, model_dir).engines if manifest.is_file() else None
        if not rebuild and plan_is_current(engines, version_dir, cc, trt_version):
            say(
                f"skipping {model_dir.name} v{version_dir.name}: its "
                f"plan for cc {cc} is built by TensorRT {trt_version} "
                "(--rebuild builds it again)"
            )
            continue
        filename = f"model.{cc}.plan" if per_cc else plan.get("plan", PLAN_FILENAME)
        say(f"building {model_dir.name} v{version_dir.name} ({plan.get('precision', 'fp32')}, cc {cc}) ...")
        result = engine_from_onnx(
            onnx_path,
            version_dir / filename,
            plan["profiles"],
            workspace_bytes=workspace_bytes or plan.get("workspace_bytes", DEFAULT_WORKSPACE_BYTES),
            optimization_level=optimization_level
            if optimization_level is not None
            else plan.get("builder_optimization_level", DEFAULT_OPT_LEVEL),
            timing_cache=repo / f".{TIMING_CACHE_NAME}",
        )
        _record_engine(
            model_dir, version_dir, result, filename, per_cc, manifest_path(model_dir, int(version_dir.name))
        )
        results.append(result)
    return results


def _record_engine(
    model_dir: Path, version_dir: Path, result: EngineResult, filename: str, per_cc: bool, manifest: Path
) -> None:
    """Manifest: TensorRT version, compute capability, plan hash; config: cc_model_filenames when per-cc."""
    from .manifest import file_hashes, load_manifest, sha256_file, update_manifest  # noqa: PLC0415

    engines = dict(load_manifest(manifest, model_dir).engines) if manifest.is_file() else {}
    digest = sha256_file(result.plan_path)
    engines[result.compute_capability] = {
        "plan": filename,
        "tensorrt_version": result.tensorrt_version,
        "compute_capability": result.compute_capability,
        "build_s": result.build_s,
        "sha256": digest,
    }
    # verify checks the plan (and the config rewritten below) like every other file of the build
    files = {result.plan_path.relative_to(model_dir).as_posix(): digest}
    if per_cc:
        config = model_dir / "config.pbtxt"
        text = config_text(config)  # bounded, one open
        entries = {cc: e["plan"] for cc, e in engines.items()}
        replace_file(config, cc_config_text(text, entries))  # a link planted there is replaced, not followed
        files.update(file_hashes(model_dir, [config]))
    if manifest.is_file():
        update_manifest(manifest, files, engines=engines, tensorrt_version=result.tensorrt_version)


def cc_config_text(text: str, cc_model_filenames: Mapping[str, str]) -> str:
    """``text`` (a config.pbtxt) with its ``cc_model_filenames`` map replaced by ``cc_model_filenames``.

    Parsed and written with protobuf's ``text_format``: the leading comment lines are kept, the rest is laid
    out the way protobuf writes it.
    """
    from google.protobuf import text_format

    from .validate import config_from_text

    config = config_from_text(text)
    config.cc_model_filenames.clear()
    config.cc_model_filenames.update(dict(cc_model_filenames))
    comments = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return comments + text_format.MessageToString(config)
