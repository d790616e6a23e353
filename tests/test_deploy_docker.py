"""``tritongen deploy --to docker``: the files it writes, checked by the tools their users run, and the decisive
proof that the serving image's package list serves every generated Python-backend model.

There is no Docker engine here. What is proven instead: hadolint passes on every Dockerfile; compose.yaml
validates against the Compose specification's JSON schema; every module every generated Python-backend model
imports is in the standard library, Triton's Python backend, or the serving image's packages; those packages,
pip-installed from PyPI into a fresh virtual environment, run the repository's Python-backend models in the
local tritonserver and the ensembles answer correctly (and the same without one package fails to load); the pins
resolve to wheels for the Python of every NGC image tritongen knows.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import factories
from tests.conftest import ENV_CONFIG, ENV_MODEL, free_ports, run_cli, write_model
from tritongen.deploy.docker import ENGINE_BUILDER_PACKAGES, compose_problems, docker_bundle_from_repository
from tritongen.deploy.python_deps import BACKEND_MODULES, KNOWN_PACKAGES, modules_imported_by
from tritongen.errors import TritongenError
from tritongen.plan_compat import NGC_PLATFORMS, NGC_RELEASES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A linter installed with the project's `deploy` extra (scripts/setup.sh); missing is a failure, not a skip."""
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).is_file() else None)
    assert found, f"{name} is not installed: run scripts/setup.sh (pip install -e '.[deploy]')"
    return found


def hadolint(path: Path) -> str:
    result = subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint {path.name}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def ensemble_repo(tmp_path_factory) -> Path:
    """MiniLM (text), a tiny ViT (image), a custom pre/post pair and a stateful model: every Python-backend
    template, plus a probe model that reports where its packages come from."""
    from tests.test_ensemble import POST_PY, PRE_PY, minilm_dir, save_image_classifier
    from tritongen.ensemble import build_ensemble
    from tritongen.spec import build_spec_from_options

    work = tmp_path_factory.mktemp("deploy-ens")
    repo = work / "repo"
    common = dict(repo=repo, max_batch_size=8, max_queue_delay_us=5000)
    build_ensemble(build_spec_from_options(minilm_dir(), name="minilm", **common))
    build_ensemble(build_spec_from_options(save_image_classifier(work / "vision"), top_k=2, **common))
    pair = factories.save_model(
        factories.make_two_in_two_out(), work / "pair.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    (work / "pre.py").write_text(PRE_PY)
    (work / "post.py").write_text(POST_PY)
    build_ensemble(
        build_spec_from_options(
            pair,
            name="pair",
            inputs=["a:FP32:4", "b:FP32:4"],
            outputs=["sum", "product"],
            preprocess=str(work / "pre.py"),
            postprocess=str(work / "post.py"),
            **common,
        )
    )
    from tritongen.build import build

    acc = factories.save_model(factories.Accumulator(), work / "acc.pt", "torchscript")
    build(  # a stateful model: the sequence runner template
        build_spec_from_options(
            acc,
            name="acc",
            inputs=["x:FP32:4", "acc:FP32:4"],
            outputs=["y", "acc_out"],
            states=["acc:acc_out"],
            repo=repo,
            max_batch_size=8,
            target="local",
        )
    )
    write_model(repo, "env_probe", ENV_CONFIG, ENV_MODEL)
    return repo


@pytest.fixture(scope="module")
def trt_repo(tmp_path_factory) -> Path:
    """A small CNN built with --target tensorrt here (no TensorRT): its plan is pending."""
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    root = tmp_path_factory.mktemp("deploy-trt")
    model = factories.save_model(factories.make_small_conv(), root / "conv.pt", "state_dict")
    build(
        build_spec_from_options(
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
    )
    return root / "repo"


def _pip_line(dockerfile: str) -> list[str]:
    """The quoted requirements of the Dockerfile's `pip install` instruction."""
    text = dockerfile.replace("\\\n", " ")
    line = next(line for line in text.splitlines() if "pip install" in line)
    return [part.strip('"') for part in line.split() if part.startswith('"')]


# ------------------------------------------------------------------------------------------ the files


def test_ensemble_bundle_serving_image_compose_and_readme(ensemble_repo, tmp_path, capsys):
    out = tmp_path / "deploy"
    code, stdout, err = run_cli(
        ["deploy", str(ensemble_repo), "--to", "docker", "--out", str(out), "--allow-unverified", "env_probe"], capsys
    )
    assert code == 0, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".tritongen-bundle",  # what deploy --force may replace (tests/test_deploy_safety.py)
        "README.md",
        "compose.yaml",
        "serving.Dockerfile",
    ]
    dockerfile = (out / "serving.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3\n" in dockerfile
    want = sorted(KNOWN_PACKAGES[m] for m in ("numpy", "onnxruntime", "transformers", "PIL"))
    assert _pip_line(dockerfile) == want, "exactly the packages the models import, pinned"
    assert "serving image installs: " + " ".join(want) in stdout
    hadolint(out / "serving.Dockerfile")

    text = (out / "compose.yaml").read_text()
    assert compose_problems(text) == []
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"triton"}, "no pending plans: no engine builder at all"
    triton = services["triton"]
    assert "depends_on" not in triton and triton["build"]["dockerfile"] == "serving.Dockerfile"
    assert triton["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001", "127.0.0.1:8002:8002"]
    assert triton["healthcheck"]["test"][-1] == "http://localhost:8000/v2/health/ready"
    assert "deploy" not in triton, "CPU-only Python-backend models: no GPU reservation"
    assert triton["environment"] == {
        "OPENBLAS_NUM_THREADS": "1",
        "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so",
    }, "what `tritongen serve` gives its server: one BLAS thread for the stubs, jemalloc"
    mount = triton["volumes"][0]
    assert mount.startswith("${TRITONGEN_REPOSITORY:-") and mount.endswith("}:/models:ro")
    default = mount[len("${TRITONGEN_REPOSITORY:-") : -len("}:/models:ro")]
    assert not Path(default).is_absolute() and (out / default).resolve() == ensemble_repo.resolve()
    readme = (out / "README.md").read_text()
    assert "docker compose up" in readme and "TRITONGEN_REPOSITORY" in readme and "onnxruntime==" in readme
    # the check runs as written from the bundle's folder: each entry model by name, the repository given
    checks = [line for line in readme.splitlines() if line.startswith("tritongen infer ")]
    assert f"tritongen infer minilm --url 127.0.0.1:8001 --repo {default} --check" in checks, checks
    # entries with answers saved to compare: not an ensemble's steps, not a hand-written model (env_probe), not an
    # ensemble the build cannot run end to end (pair: the user's own code; vision: images)
    assert [line.split()[2] for line in checks] == ["acc", "minilm"], checks


def test_tensorrt_bundle_builds_engines_first_with_one_release(trt_repo, tmp_path):
    bundle = docker_bundle_from_repository(trt_repo, tmp_path / "deploy")
    out = bundle.out
    assert bundle.pending_plans == {"conv": [1]} and bundle.release == "24.10"
    wheel = next((out / "wheels").glob("tritongen-*-py3-none-any.whl"))
    builder = (out / "engine-builder.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tensorrt:24.10-py3\n" in builder
    assert f"COPY wheels/{wheel.name} " in builder and "COPY tritongen" not in builder, (
        "installed from a wheel, not a source copy"
    )
    assert _pip_line(builder) == list(ENGINE_BUILDER_PACKAGES)
    hadolint(out / "engine-builder.Dockerfile")
    assert not (out / "serving.Dockerfile").exists(), "no Python-backend model: Triton runs NGC's image as it is"
    text = (out / "compose.yaml").read_text()
    assert compose_problems(text) == []
    services = yaml.safe_load(text)["services"]
    assert services["triton"]["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert services["triton"]["environment"]["OPENBLAS_NUM_THREADS"] == "1"
    assert "environment" not in services["engine-builder"]
    assert services["triton"]["depends_on"] == {"engine-builder": {"condition": "service_completed_successfully"}}
    assert services["engine-builder"]["command"] == ["engine", "/models"]
    assert services["engine-builder"]["volumes"][0].endswith(":/models"), (
        "the builder writes the plans into the repository"
    )
    for name in ("engine-builder", "triton"):
        assert services[name]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]

    newer = docker_bundle_from_repository(trt_repo, tmp_path / "deploy-25", ngc_release="25.01")
    builder = (newer.out / "engine-builder.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tensorrt:25.01-py3\n" in builder and "ENV PIP_BREAK_SYSTEM_PACKAGES=1" in builder
    assert (
        yaml.safe_load((newer.out / "compose.yaml").read_text())["services"]["triton"]["image"]
        == "nvcr.io/nvidia/tritonserver:25.01-py3"
    )
    hadolint(newer.out / "engine-builder.Dockerfile")


def test_host_off_loopback_publishes_there_and_restricts_model_control(trt_repo, tmp_path):
    bundle = docker_bundle_from_repository(trt_repo, tmp_path / "public", host="0.0.0.0")
    text = (bundle.out / "compose.yaml").read_text()
    assert compose_problems(text) == []
    triton = yaml.safe_load(text)["services"]["triton"]
    assert triton["ports"][0] == "0.0.0.0:8000:8000"
    restricted = [a for a in triton["command"] if a.startswith("--http-restricted-api=")]
    assert restricted and "model-repository" in restricted[0] and "${TRITONGEN_ADMIN_TOKEN:?" in restricted[0]
    loopback6 = docker_bundle_from_repository(trt_repo, tmp_path / "v6", host="::1")
    triton = yaml.safe_load((loopback6.out / "compose.yaml").read_text())["services"]["triton"]
    assert triton["ports"][0] == "[::1]:8000:8000" and len(triton["command"]) == 2


def test_bad_input_is_one_error_and_writes_nothing(trt_repo, ensemble_repo, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(trt_repo, broken)
    (broken / "conv" / "config.pbtxt").write_text(
        (broken / "conv" / "config.pbtxt").read_text().replace("max_batch_size: 8", "max_batch_size: -3")
    )
    cases = {
        "repository does not validate": (
            ["deploy", str(broken), "--to", "docker", "--out", str(tmp_path / "a")],
            "problem",
        ),
        "unknown NGC release": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "b"), "--ngc-version", "23.01"],
            "NGC release '23.01' is not known",
        ),
        "out inside the repository": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(trt_repo / "deploy")],
            "inside the model repository",
        ),
        "--host with a command": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "e"), "--host", "$(touch x)"],
            "is not an IP address",
        ),
        # Docker reads a published port's address with Go's net.ParseIP: compose would refuse the bundle
        "--host with an IPv6 zone": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "z"), "--host", "fe80::1%lo"],
            "names an IPv6 zone (lo); Docker publishes ports on an address without one",
        ),
        "bad --extra-package": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "c"), "--extra-package", "sklearn"],
            "IMPORT=REQUIREMENT",
        ),
        # found by an attacker: the last of two pins won silently; a version pip refuses passed into the Dockerfile
        "--extra-package twice": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "f")]
            + ["--extra-package", "sklearn=scikit-learn==1.5.2", "--extra-package", "sklearn=scikit-learn==1.4.0"],
            "--extra-package names sklearn twice, as scikit-learn==1.5.2 and scikit-learn==1.4.0",
        ),
        "--extra-package with no version": (
            ["deploy", str(trt_repo), "--to", "docker", "--out", str(tmp_path / "g")]
            + ["--extra-package", "sklearn=scikit-learn==!+-"],
            "is not a pinned requirement",
        ),
    }
    for what, (args, words) in cases.items():
        code, _, err = run_cli(args, capsys)
        assert code == 1, what
        assert err.startswith("error: ") and words in err.splitlines()[0] and "Traceback" not in err, (what, err)
        assert not Path(args[args.index("--out") + 1]).exists(), what
    assert not (trt_repo / "deploy").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    code, _, err = run_cli(["deploy", str(trt_repo), "--to", "docker", "--out", str(existing)], capsys)
    assert code == 1 and "already exists" in err and "--force" in err
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    # --force replaces a bundle tritongen wrote, never a folder of other files (tests/test_deploy_safety.py)
    code, _, err = run_cli(["deploy", str(trt_repo), "--to", "docker", "--out", str(existing), "--force"], capsys)
    assert code == 1 and "is not a bundle tritongen deploy wrote" in err.splitlines()[0], err
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    (existing / "mine.txt").unlink()
    code, _, err = run_cli(["deploy", str(trt_repo), "--to", "docker", "--out", str(existing), "--force"], capsys)
    assert code == 0, err
    (existing / "compose.yaml").write_text("edited")
    code, _, err = run_cli(["deploy", str(trt_repo), "--to", "docker", "--out", str(existing), "--force"], capsys)
    assert code == 0, err
    assert (existing / "compose.yaml").read_text() != "edited"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"


def test_an_import_tritongen_cannot_map_is_an_error_until_named(ensemble_repo, tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(ensemble_repo / "pair_preprocess", repo / "pair_preprocess")
    user_code = repo / "pair_preprocess" / "1" / "user_code.py"
    user_code.write_text("import sklearn.preprocessing\n" + user_code.read_text())
    (repo / "pair_preprocess" / "1" / "tritongen").rename(
        repo / "pair_preprocess" / "1" / ".manifest-off"
    )  # edited: no manifest
    code, _, err = run_cli(
        ["deploy", str(repo), "--to", "docker", "--out", str(tmp_path / "d"), "--allow-unverified", "pair_preprocess"],
        capsys,
    )
    assert code == 1 and "imports 'sklearn'" in err and "--extra-package sklearn=" in err
    assert not (tmp_path / "d").exists()
    code, out, err = run_cli(
        [
            "deploy",
            str(repo),
            "--to",
            "docker",
            "--out",
            str(tmp_path / "d"),
            "--allow-unverified",
            "pair_preprocess",
            "--extra-package",
            "sklearn=scikit-learn==1.5.2",
        ],
        capsys,
    )
    assert code == 0, err
    assert "scikit-learn==1.5.2" in _pip_line((tmp_path / "d" / "serving.Dockerfile").read_text())


def test_every_template_import_is_stdlib_backend_or_installed_by_the_serving_image(ensemble_repo, tmp_path):
    bundle = docker_bundle_from_repository(ensemble_repo, tmp_path / "deploy", allow_unverified=("env_probe",))
    installed = {module for module, requirement in KNOWN_PACKAGES.items() if requirement in bundle.serving.requirements}
    templates = sorted((ROOT / "templates" / "python").glob("*.py"))
    generated = {p.read_bytes() for p in ensemble_repo.glob("*/1/model.py")}
    assert templates and all(t.read_bytes() in generated for t in templates), (
        "the repository holds every template, as generated"
    )
    for path in [*templates, *ensemble_repo.glob("*/1/*.py")]:
        for module in modules_imported_by(path.read_text(), str(path)):
            assert module in sys.stdlib_module_names or module in BACKEND_MODULES or module in installed, (
                path.name,
                module,
            )
    assert {"onnxruntime", "transformers", "PIL", "numpy"} <= installed


# ------------------------------------------------------------------------------------------ serve --docker, validate


def test_serve_docker_never_prints_a_run_line_that_cannot_load(trt_repo, ensemble_repo, tmp_path, capsys):
    code, out, err = run_cli(["serve", str(trt_repo), "--docker"], capsys)
    assert code == 0, err
    assert "docker run" not in out and "not built yet (conv v1)" in out
    assert f"tritongen deploy {trt_repo.resolve()} --to docker --out deploy" in out
    code, out, _ = run_cli(["serve", str(ensemble_repo), "--docker", "--allow-unverified", "env_probe"], capsys)
    assert "docker run" not in out and "onnxruntime==" in out and "transformers==" in out
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL

    plain = tmp_path / "plain"
    write_model(plain, "double", DOUBLE_CONFIG, DOUBLE_MODEL)  # numpy only: NGC's image has it
    code, out, _ = run_cli(["serve", str(plain), "--docker", "--allow-unverified", "double"], capsys)
    assert (
        out.startswith("docker run ")
        and "nvcr.io/nvidia/tritonserver:24.10-py3" in out
        and "127.0.0.1:8000:8000" in out
    )


def test_docker_steps_from_the_api_are_what_serve_docker_prints(trt_repo, tmp_path, capsys):
    """tritongen.docker_steps is serve --docker from Python: the same checks first, the same steps."""
    import tritongen
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL

    plain = tmp_path / "plain"
    write_model(plain, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    for repo, extra in ((plain, ["--allow-unverified", "double"]), (trt_repo, [])):
        steps = tritongen.docker_steps(repo, allow_unverified=extra[1:], http_port=9000)
        code, out, err = run_cli(["serve", str(repo), "--docker", "--http-port", "9000", *extra], capsys)
        assert code == 0, err
        assert out == steps.text() + "\n"
    assert "127.0.0.1:9000:8000" in tritongen.docker_steps(plain, allow_unverified=["double"], http_port=9000).text()
    with pytest.raises(TritongenError, match="no manifest"):  # verified first, as serve does
        tritongen.docker_steps(plain)


def test_validate_warns_about_pending_plans_and_names_the_command(trt_repo, capsys):
    code, out, _ = run_cli(["validate", str(trt_repo)], capsys)
    assert code == 0
    warning = next(line for line in out.splitlines() if line.startswith("warning: conv:"))
    assert "not built yet" in warning and f"tritongen engine {trt_repo}" in warning


# ------------------------------------------------------------------------------------------ the wheel and the pins


def test_wheel_installs_tritongen_with_its_templates_and_command(trt_repo, tmp_path):
    bundle = docker_bundle_from_repository(trt_repo, tmp_path / "deploy")
    wheel = next((bundle.out / "wheels").glob("*.whl"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (target / "bin" / "tritongen").is_file()
    probe = (
        "import tritongen, tritongen.templates as t; from tritongen.cli import cli; "
        "print(tritongen.__file__); print(t.template_dir()); print(sorted(cli.commands))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    package, templates, commands = result.stdout.splitlines()
    assert Path(package).is_relative_to(target) and Path(templates) == target / "tritongen" / "templates"
    assert (Path(templates) / "python" / "onnx_runner.py").is_file() and (
        Path(templates) / "deploy" / "docker" / "compose.yaml.j2"
    ).is_file()
    assert "'engine'" in commands and "'deploy'" in commands
    again = docker_bundle_from_repository(trt_repo, tmp_path / "again")
    assert next((again.out / "wheels").glob("*.whl")).read_bytes() == wheel.read_bytes(), "the wheel is reproducible"


@pytest.mark.slow
@pytest.mark.parametrize("python", sorted({python for _, python in NGC_PLATFORMS.values()}))
def test_pins_resolve_to_wheels_for_the_images_python(python, trt_repo, tmp_path):
    """pip (from PyPI) finds manylinux wheels for every pin, and the engine builder's wheel + pins, for that Python."""
    assert set(NGC_PLATFORMS) == set(NGC_RELEASES)
    wheel = next((docker_bundle_from_repository(trt_repo, tmp_path / "deploy").out / "wheels").glob("*.whl"))
    for requirements in (list(KNOWN_PACKAGES.values()), [str(wheel), *ENGINE_BUILDER_PACKAGES]):
        report = tmp_path / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--only-binary=:all:",
                "-q",
                "--python-version",
                python,
                "--platform",
                "manylinux_2_28_x86_64",
                "--platform",
                "manylinux_2_17_x86_64",
                "--platform",
                "manylinux2014_x86_64",
                "--target",
                str(tmp_path / "unused"),
                "--report",
                str(report),
                *requirements,
            ],
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        resolved = {
            _normalized(item["metadata"]["name"]): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]
        }
        assert resolved["numpy"].startswith("1."), "Triton 2.51's Python backend needs numpy<2"
        for requirement in requirements:
            if "==" in requirement:
                name, version = requirement.split("==")
                assert resolved[_normalized(name)] == version, requirement


def _normalized(name: str) -> str:
    """PEP 503: onnx_graphsurgeon and onnx-graphsurgeon are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------------------------------ the decisive test


def _venv_with(path: Path, requirements: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    result = subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def _venv_without(source: Path, path: Path, dropped: tuple[str, ...]) -> Path:
    """A venv of this Python holding ``source``'s site-packages (hard links) minus the ``dropped`` entries."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    src = next(source.glob("lib/python3*/site-packages"))
    dst = next(path.glob("lib/python3*/site-packages"))
    for entry in src.iterdir():
        if not any(entry.name.lower().startswith(d) for d in dropped):
            if entry.is_dir():
                shutil.copytree(entry, dst / entry.name, copy_function=os.link, dirs_exist_ok=True)
            else:
                os.link(entry, dst / entry.name)
    return path


@pytest.mark.server
@pytest.mark.slow
def test_serving_packages_in_a_fresh_environment_serve_every_python_model(
    ensemble_repo, server_install, tmp_path_factory
):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoImageProcessor, ViTForImageClassification

    from tests.test_ensemble import IMAGE_LABELS, SENTENCES, encoded_image, minilm_dir, texts
    from tritongen.client import infer_concurrently, infer_from_arrays
    from tritongen.server import ServeSpec, server_from_repository

    if server_install.source != "wheel":
        pytest.skip("the Python environment of the models can be chosen for the nvidia-pytriton wheel's server only")
    work = tmp_path_factory.mktemp("fresh-env")
    bundle = docker_bundle_from_repository(ensemble_repo, work / "deploy", allow_unverified=("env_probe",))
    requirements = list(bundle.serving.requirements)
    assert requirements == _pip_line((bundle.out / "serving.Dockerfile").read_text())
    venv = _venv_with(work / "venv", requirements)  # exactly the serving image's list, from PyPI
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3)))
    with server_from_repository(ServeSpec(repo=ensemble_repo, python_env=venv, ready_timeout_s=240, **ports)) as server:
        probe = infer_from_arrays(server.grpc_url, "env_probe", {"TEXT": np.array([b"x"], dtype=object)})["INFO"]
        numpy_file, ort_file = probe[1].decode(), probe[3].decode()
        assert Path(numpy_file).is_relative_to(venv) and Path(ort_file).is_relative_to(venv), (
            "the stub imports from the fresh venv"
        )

        responses = infer_concurrently(server.grpc_url, "minilm", [texts(s) for s in SENTENCES], concurrency=6)
        want = SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
        for i, response in enumerate(responses):
            got = response["EMBEDDING"][0]
            assert float(np.dot(got, want[i]) / np.linalg.norm(got)) >= 0.9999, SENTENCES[i]

        vision = ensemble_repo.parent / "vision"
        processor = AutoImageProcessor.from_pretrained(str(vision))
        model = ViTForImageClassification.from_pretrained(str(vision)).eval()
        from PIL import Image

        data = encoded_image("PNG", seed=3)
        pixels = processor(Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            probs = torch.softmax(model(pixel_values=pixels).logits, -1)[0].numpy()
        got = infer_from_arrays(server.grpc_url, "vision", {"IMAGE": np.array([[data]], dtype=object)})
        assert got["LABELS"][0][0].decode() == IMAGE_LABELS[int(np.argmax(probs))]
        np.testing.assert_allclose(got["SCORES"][0], np.sort(probs)[::-1][:2], atol=1e-5)

        got = infer_from_arrays(server.grpc_url, "pair", {"CSV": np.array([[b"1,2,3,4,5,6,7,8"]], dtype=object)})
        np.testing.assert_allclose(got["TOTAL"], [[36.0]])
        assert got["SUMMARY"][0][0] == b"max product 32"

    # The same environment without one of the image's packages: the models that import it fail to load.
    broken = _venv_without(venv, work / "venv-no-pil", ("pil", "pillow"))
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3)))
    with pytest.raises(TritongenError, match="vision_preprocess") as failed:
        server_from_repository(ServeSpec(repo=ensemble_repo, python_env=broken, ready_timeout_s=240, **ports))
    assert "No module named 'PIL'" in failed.value.details
    assert "minilm" not in failed.value.problem, "only the models that import PIL fail"


# ------------------------------------------------------------------------------------------ scripts/gpu_acceptance.sh


def test_gpu_acceptance_script_is_shellcheck_clean_and_uses_real_options(capsys):
    """The script cannot run here (no GPU, no Docker): its shell is checked, and every tritongen option it passes
    exists in that command's --help."""
    script = ROOT / "scripts" / "gpu_acceptance.sh"
    result = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    text = script.read_text().replace("\\\n", " ")
    calls = re.findall(r'"\$TG" (\w+)([^\n]*)', text)
    assert {command for command, _ in calls} >= {"build", "validate", "deploy", "infer", "perf"}
    for command, rest in calls:
        code, help_text, _ = run_cli([command, "--help"], capsys)
        assert code == 0
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert option in help_text, f"tritongen {command} has no {option}"
    assert "gpu acceptance: PASS" in text and "gpu acceptance: FAIL" in text


def test_python_env_must_be_a_venv_of_the_stubs_python(tmp_path):
    from tritongen.server import venv_bin

    with pytest.raises(TritongenError, match="not a virtual environment"):
        venv_bin(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").touch()
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nversion_info = 3.9.18\n")
    with pytest.raises(TritongenError, match=r"Python 3\.9\.18 environment.*-m venv"):
        venv_bin(tmp_path)
    here = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    (tmp_path / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {here}\n")
    assert venv_bin(tmp_path) == tmp_path / "bin"


@pytest.mark.parametrize("precision, entry", [("fp32", "m"), ("int8", "m_model"), ("fp16", "m_model")])
def test_the_readmes_check_of_an_ensemble_with_a_variant_model_step_checks_that_step(
    tmp_path, monkeypatch, precision, entry
):
    """The bundle README said `tritongen infer minilm_int8 ... --check`, which infer refuses: the end-to-end answers
    are FP32 PyTorch's, and an INT8 step is checked alone against the accuracy guard's bar."""
    import tritongen.end_to_end as end_to_end
    import tritongen.manifest as manifest
    from tritongen.end_to_end import check_target
    from tritongen.layout import REFERENCE_NAME, SAMPLES_NAME, artifact_dir

    for name, saved in (("m", (end_to_end.END_TO_END_NAME,)), ("m_model", (REFERENCE_NAME, SAMPLES_NAME))):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n')
        artifact_dir(tmp_path / name, 1).mkdir(parents=True, exist_ok=True)
        for file in saved:
            (artifact_dir(tmp_path / name, 1) / file).write_text("{}")
    import types

    read = types.SimpleNamespace(tolerances=lambda *keys: (1e-5, 1e-3))  # a manifest with the parity tolerances
    monkeypatch.setattr(manifest, "read_manifest", lambda model_dir, version: read)
    monkeypatch.setattr(end_to_end, "step_precision", lambda record: precision)
    assert check_target(tmp_path / "m") == entry
    (artifact_dir(tmp_path / "m_model", 1) / SAMPLES_NAME).unlink()  # infer --check sends the saved samples
    assert check_target(tmp_path / "m") == ("m" if precision == "fp32" else None)


def test_the_deploy_command_serve_docker_suggests_carries_the_checks_options(tmp_path):
    """serve --docker --allow-unverified m on a model importing tokenizers suggested `deploy ... --to docker` without
    --allow-unverified: run as printed, it refused the repository ("no manifest")."""
    import shlex

    import tritongen
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL

    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, "import tokenizers  # a package NGC's image lacks\n" + DOUBLE_MODEL)
    steps = tritongen.docker_steps(repo, allow_unverified=["double"])
    assert steps.command is None and steps.deploy_command is not None, steps.text()
    words = shlex.split(steps.deploy_command)
    assert words[words.index("--allow-unverified") + 1] == "double"


def test_a_bundle_written_through_a_link_mounts_the_repository_it_names(trt_repo, tmp_path, capsys):
    """Found by an attacker: with --out lnk/d8 and lnk -> deep/a/b, compose.yaml mounted ../../repo, computed from
    the link's path against the repository's real one: from the real folder it named a folder that is not there."""
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "deep" / "a" / "b")
    for out in (tmp_path / "lnk" / "d8", tmp_path / "plain"):
        code, _, err = run_cli(["deploy", str(trt_repo), "--to", "docker", "--out", str(out)], capsys)
        assert code == 0, err
        volume = yaml.safe_load((out / "compose.yaml").read_text())["services"]["triton"]["volumes"][0]
        default = volume[len("${TRITONGEN_REPOSITORY:-") : -len("}:/models:ro")]
        for base in (out, out.resolve()):  # joined by name (compose) and followed on disk (a shell there)
            assert Path(os.path.normpath(base / default)).resolve() == trt_repo.resolve(), (base, default)


def test_a_bundle_beside_the_repository_under_a_linked_folder_stays_relative(tmp_path):
    """A reviewer's catch: a link anywhere above both (macOS's /tmp, a /home on a link) made the first version write
    the absolute path, so the bundle could no longer move with the repository."""
    from tritongen.deploy.docker import _repository_from

    (tmp_path / "real" / "repo").mkdir(parents=True)
    (tmp_path / "lk").symlink_to(tmp_path / "real")
    out = tmp_path / "lk" / "deploy"
    assert _repository_from(out, (tmp_path / "lk" / "repo").resolve()) == "../repo"
