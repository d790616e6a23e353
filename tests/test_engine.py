"""TensorRT engines: the Polygraphy build (needs TensorRT + GPU, skipped here) and everything around it that runs on
CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests import factories
from tritongen.build import build
from tritongen.cli import main
from tritongen.dim_ranges import dim_range_from_arg
from tritongen.engine import cc_config_text, engines_from_repository, profiles_from_spec, tensorrt_version
from tritongen.errors import TritongenError
from tritongen.spec import build_spec_from_options
from tritongen.validate import check_repository

needs_tensorrt = pytest.mark.skipif(
    tensorrt_version() is None, reason="TensorRT is not installed (PyPI only has placeholders here)"
)


@pytest.fixture(scope="module")
def prepared_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trt")
    model = factories.save_model(factories.make_small_conv(), root / "conv.pt", "state_dict")
    spec = build_spec_from_options(
        model,
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        model_factory="tests.factories:make_small_conv",
        max_batch_size=8,
        repo=root / "repo",
        name="conv",
        target="tensorrt",
        precision="fp16",
    )
    build(spec)
    return root / "repo"


def test_profiles_cover_batch_and_every_variable_dim(tmp_path):
    model = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript")
    spec = build_spec_from_options(model, inputs=["x:FP32:-1,8"], max_batch_size=4, repo=tmp_path, max_dynamic_dim=64)
    assert profiles_from_spec(spec) == [{"x": {"min": [1, 1, 8], "opt": [4, 64, 8], "max": [4, 64, 8]}}]
    ranged = dataclasses.replace(spec, dim_ranges=(dim_range_from_arg("x:0:5:20:40"),))
    assert profiles_from_spec(ranged) == [{"x": {"min": [1, 5, 8], "opt": [4, 20, 8], "max": [4, 40, 8]}}]


def test_prepared_repository_validates_and_engine_says_tensorrt_is_missing(prepared_repo, capsys):
    check_repository(prepared_repo)
    manifest = json.loads((prepared_repo / "conv/1/tritongen/manifest.json").read_text())
    assert manifest["tensorrt"]["lint"]["ok"] and manifest["precision"]["precision"] == "fp16"
    if tensorrt_version() is None:
        with pytest.raises(SystemExit):
            main(["engine", str(prepared_repo)])
        assert "error: TensorRT is not installed here" in capsys.readouterr().err


def test_engine_refuses_a_linked_artifact_folder_before_building_anything(prepared_repo, tmp_path):
    """A manifest or plan written under a <version>/tritongen that is a link lands wherever it points (tune refused
    it already; a reviewer found engine did not)."""
    import shutil

    from tritongen.engine import engines_from_repository

    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo)
    artifacts = repo / "conv" / "1" / "tritongen"
    shutil.move(artifacts, tmp_path / "elsewhere")
    artifacts.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(TritongenError, match=r"tritongen is a link, and tritongen would write through it"):
        engines_from_repository(repo)


def test_engine_on_a_repository_without_prepared_models(tmp_path):
    with pytest.raises(TritongenError, match="prepared for TensorRT"):
        engines_from_repository(tmp_path)


def test_cc_model_filenames_config_validates(prepared_repo, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo)
    config = repo / "conv" / "config.pbtxt"
    config.write_text(cc_config_text(config.read_text(), {"8.0": "model.8.0.plan", "9.0": "model.9.0.plan"}))
    for cc in ("8.0", "9.0"):
        (repo / "conv" / "1" / f"model.{cc}.plan").write_bytes(b"plan")
    (repo / "conv/1/tritongen/engine.json").unlink()  # no longer pending: the plans must be there
    check_repository(repo)
    text = config.read_text()
    assert text.count("cc_model_filenames") == 2 and 'platform: "tensorrt_plan"' in text


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_engine_builds_a_strongly_typed_plan(prepared_repo):
    results = engines_from_repository(prepared_repo)
    assert results and results[0].plan_path.name == "model.plan" and results[0].plan_path.stat().st_size > 0
    manifest = json.loads((prepared_repo / "conv/1/tritongen/manifest.json").read_text())
    assert manifest["tensorrt_version"] == results[0].tensorrt_version
    assert results[0].compute_capability in manifest["engines"]
    check_repository(prepared_repo)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_engine_per_compute_capability(prepared_repo):
    results = engines_from_repository(prepared_repo, per_cc=True)
    cc = results[0].compute_capability
    assert (prepared_repo / "conv" / "1" / f"model.{cc}.plan").is_file()
    assert f'key: "{cc}"' in (prepared_repo / "conv" / "config.pbtxt").read_text()


def _repo_with_plan_built_by(prepared_repo: Path, tmp_path: Path, tensorrt: str) -> Path:
    """A copy of the prepared repository whose manifest records a plan built with TensorRT ``tensorrt`` (what
    `tritongen engine` records on a GPU host; the plan file itself is a placeholder: nothing here can load it)."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo)
    (repo / "conv/1/model.plan").write_bytes(b"plan")
    (repo / "conv/1/tritongen/engine.json").unlink()
    manifest = repo / "conv/1/tritongen/manifest.json"
    data = json.loads(manifest.read_text())
    data["engines"] = {"8.9": {"plan": "model.plan", "tensorrt_version": tensorrt, "compute_capability": "8.9"}}
    manifest.write_text(json.dumps(data))
    return repo


def test_validate_refuses_a_plan_built_with_another_tensorrt_and_names_the_images(prepared_repo, tmp_path, capsys):
    from tritongen.plan_compat import tensorrt_of_triton

    repo = _repo_with_plan_built_by(prepared_repo, tmp_path, "10.3.0.26")  # TensorRT of NGC 24.08 = Triton 2.49
    assert tensorrt_of_triton("2.49.0") == "10.3.0.26" and tensorrt_of_triton("2.51.0") == "10.5.0.18"
    check_repository(repo, triton_version="2.49.0")  # the Triton it was built for
    check_repository(repo)  # no server named: only Triton's config rules
    with pytest.raises(TritongenError) as err:
        check_repository(repo, triton_version="2.51.0")
    assert "TensorRT 10.3.0.26" in err.value.details and "runs TensorRT 10.5.0.18" in err.value.details
    assert (
        "nvcr.io/nvidia/tritonserver:24.08-py3" in err.value.details
        and "nvcr.io/nvidia/tensorrt:24.10-py3" in err.value.details
    )
    with pytest.raises(SystemExit):
        main(["validate", str(repo)])  # the default: the Triton that `serve` and `serve --docker` run (2.51)
    assert capsys.readouterr().err.startswith("error: 1 problem in model repository")
    main(["validate", str(repo), "--triton-version", "2.49.0"])
    assert "1 model(s) valid" in capsys.readouterr().out


def test_serve_refuses_a_plan_its_server_cannot_load_before_booting(prepared_repo, tmp_path, server_install):
    from tritongen.server import ServeSpec, server_from_repository

    if server_install.source != "wheel":
        pytest.skip("the server's version is known only for the nvidia-pytriton wheel's server")
    repo = _repo_with_plan_built_by(prepared_repo, tmp_path, "10.3.0.26")
    with pytest.raises(TritongenError, match="cannot load in Triton 2.51.0") as err:
        server_from_repository(ServeSpec(repo=repo))
    assert "nvcr.io/nvidia/tritonserver:24.08-py3" in err.value.message


def test_serve_refuses_a_model_whose_plan_is_not_built_before_booting(prepared_repo, server_install):
    """Triton booted and failed to load the model about 10 s later (validate only warned of the pending plan)."""
    from tritongen.server import ServeSpec, server_from_repository

    with pytest.raises(TritongenError, match=r"model 'conv' of .* has no TensorRT plan for version\(s\) 1 yet") as err:
        server_from_repository(ServeSpec(repo=prepared_repo))
    assert "tritongen engine" in err.value.fix and "--target local" in err.value.fix


def test_recorded_plans_and_rewritten_config_still_verify(prepared_repo, tmp_path):
    """What `tritongen engine --per-cc` records after a build (the TensorRT build itself cannot run here: the
    plan is a placeholder file) keeps the repository verifiable: the plan and the rewritten config are hashed."""
    import shutil

    from tritongen.engine import EngineResult, _record_engine
    from tritongen.layout import manifest_path
    from tritongen.verify import check_verified

    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo)
    model_dir = repo / "conv"
    plan = model_dir / "1" / "model.8.9.plan"
    plan.write_bytes(b"placeholder plan")
    _record_engine(
        model_dir,
        model_dir / "1",
        EngineResult(plan, "10.5.0.18", "8.9", 1.0),
        plan.name,
        True,
        manifest_path(model_dir, 1),
    )
    assert 'key: "8.9"' in (model_dir / "config.pbtxt").read_text()
    assert check_verified(repo).ok
    plan.write_bytes(b"another plan")
    with pytest.raises(TritongenError, match="conv/1/model.8.9.plan does not match"):
        check_verified(repo)


def test_a_recorded_plan_is_current_only_for_its_gpu_tensorrt_and_bytes(prepared_repo, tmp_path):
    """`tritongen engine` skips a model whose plan the manifest records for this compute capability and TensorRT
    (the file unchanged), so `docker compose up` does not rebuild every engine each time."""
    import shutil

    from tritongen.engine import EngineResult, _record_engine, plan_is_current
    from tritongen.layout import manifest_path
    from tritongen.manifest import load_manifest

    repo = tmp_path / "repo"
    shutil.copytree(prepared_repo, repo)
    model_dir, version_dir = repo / "conv", repo / "conv" / "1"
    plan = version_dir / "model.plan"
    plan.write_bytes(b"placeholder plan")
    _record_engine(
        model_dir,
        version_dir,
        EngineResult(plan, "10.5.0.18", "8.9", 1.0),
        plan.name,
        False,
        manifest_path(model_dir, 1),
    )
    engines = load_manifest(manifest_path(model_dir, 1), model_dir).engines
    assert plan_is_current(engines, version_dir, "8.9", "10.5.0.18")
    assert not plan_is_current(engines, version_dir, "9.0", "10.5.0.18")  # another GPU generation
    assert not plan_is_current(engines, version_dir, "8.9", "10.7.0.23")  # another TensorRT
    assert not plan_is_current(None, version_dir, "8.9", "10.5.0.18")  # nothing recorded
    plan.write_bytes(b"a plan swapped in")
    assert not plan_is_current(engines, version_dir, "8.9", "10.5.0.18")


@pytest.mark.parametrize(
    "given, words",
    [
        ("bogus", "--triton-version 'bogus' is not a Triton server version"),
        (
            "24.10",
            "--triton-version 24.10 is an NGC release (YY.MM), not a Triton version: pass its server's version: "
            "--triton-version 2.51.0",
        ),
    ],
)
def test_a_triton_version_that_is_none_is_refused_not_skipped(tmp_path, given, words):
    """'bogus' passed: a release the table does not know skips the plan check (Triton says so at load time)."""
    import re

    from tritongen.errors import TritongenError
    from tritongen.validate import check_repository

    (tmp_path / "repo").mkdir()
    with pytest.raises(TritongenError, match=re.escape(words)):
        check_repository(tmp_path / "repo", triton_version=given)


def test_a_servers_own_version_string_is_not_judged_as_a_users(tmp_path):
    """serve reads $TRITON_SERVER_VERSION of a server on PATH: a source build's '2.55.0dev' (or a 3.x) must not stop
    it; plan checks just know no such release."""
    from tritongen.plan_compat import check_triton_version, plan_problems_from_repository

    (tmp_path / "repo" / "m").mkdir(parents=True)
    for version in ("2.55.0dev", "3.0.1", "whatever"):
        assert plan_problems_from_repository(tmp_path / "repo", version) == {}
    assert check_triton_version("2.55.0dev") == "2.55.0dev" and check_triton_version("3.0.1") == "3.0.1"


def test_engine_takes_one_model_folder_as_that_model(prepared_repo, tmp_path, capsys):
    """``engine REPO/NAME``: before, "no model in repo/conv is prepared for TensorRT" although it was."""
    from tritongen.engine import engine_models

    assert [m[0].name for m in engine_models(prepared_repo / "conv")] == ["conv"]
    if tensorrt_version() is None:  # got past the search for prepared models: only TensorRT is missing
        with pytest.raises(TritongenError, match="TensorRT is not installed"):
            engines_from_repository(prepared_repo / "conv")
    unprepared = tmp_path / "repo" / "plain"
    unprepared.mkdir(parents=True)
    (unprepared / "config.pbtxt").write_text('name: "plain"\n')
    with pytest.raises(SystemExit):
        main(["engine", str(unprepared)])
    assert capsys.readouterr().err.startswith(f"error: model plain ({unprepared}) is not prepared for TensorRT")


def test_engine_warns_where_a_text_ensembles_profile_is_shorter_than_its_tokenizer(tmp_path):
    """A text ensemble built before its profile took the tokenizer's max_length (profile max 128, max_length 256):
    the engine would refuse texts of 129-256 tokens; `tritongen engine` says so before building the plan."""
    repo = tmp_path / "repo"
    plan = repo / "t_model" / "1" / "tritongen"
    plan.mkdir(parents=True)
    profile = {"input_ids": {"min": [1, 1], "opt": [8, 64], "max": [8, 128]}}
    (plan / "engine.json").write_text(json.dumps({"onnx": "model.onnx", "profiles": [profile]}))
    (repo / "t_preprocess").mkdir()
    (repo / "t_preprocess" / "config.pbtxt").write_text(
        'name: "t_preprocess"\nbackend: "python"\n'
        'parameters {\n  key: "max_length"\n  value { string_value: "256" }\n}\n'
    )
    said: list[str] = []
    with pytest.raises(TritongenError):  # TensorRT missing here; on a GPU host the placeholder ONNX fails to parse
        engines_from_repository(repo, progress=said.append)
    assert said[0].startswith("warning: t_model's TensorRT profile 0 takes input_ids up to 128 tokens, but ")
    assert "refuse texts of 129 to 256 tokens; rebuild the ensemble with --max-dim 256" in said[0]
    profile["input_ids"]["max"] = [8, 256]
    (plan / "engine.json").write_text(json.dumps({"onnx": "model.onnx", "profiles": [profile]}))
    said.clear()
    with pytest.raises(TritongenError):
        engines_from_repository(repo, progress=said.append)
    assert not [line for line in said if line.startswith("warning")]


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "5000"])
def test_a_workspace_that_is_no_size_is_one_error_line(tmp_path, capsys, value):
    """--workspace-gb nan was a ValueError traceback from the CLI's own int(); 0 silently meant the default 4 GiB."""
    from tests.test_bad_input import _assert_one_clean_line, _run

    code, out, err = _run(["engine", str(tmp_path), "--workspace-gb", value])
    _assert_one_clean_line(value, code, out, err, ("is not a size above 0 and at most 1024 GiB",))
    with pytest.raises(TritongenError, match="is not a byte count above 0"):
        engines_from_repository(tmp_path, workspace_bytes=0)
