"""``tritongen deploy`` given hostile or careless input: ``--out`` that holds the repository (or anything not a bundle)
with ``--force``, repository paths compose.yaml cannot hold, an ``--extra-package`` with a trailing newline, a
Python-backend model spelled ``backend: 'python'``, unverified repositories for the cluster targets, and namespaces
Kubernetes would refuse. Each is one ``error:`` line, exit 1, and nothing written or deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, run_cli, write_model
from tests.test_deploy_kubernetes import vouch
from tritongen.deploy.bundle import MARKER_FILE, is_bundle
from tritongen.deploy.python_deps import python_models
from tritongen.errors import TritongenError

TARGETS = ("docker", "kubernetes", "kserve")


def one_error(code: int, err: str) -> str:
    """The single ``error:`` line of a refused command."""
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> text): what a refused command must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def built_repo(path: Path) -> Path:
    """A verified one-model repository (Python backend, numpy): what every target deploys."""
    vouch(write_model(path, "double", DOUBLE_CONFIG, DOUBLE_MODEL))
    return path


def deploy(repo: Path, target: str, out: Path | str, *extra: str) -> list[str]:
    return ["deploy", str(repo), "--to", target, "--out", str(out), *extra]


# ------------------------------------------------------------------------------------------ --out and --force


@pytest.mark.parametrize("target", TARGETS)
def test_force_never_replaces_the_repository_or_a_folder_holding_it(target, tmp_path, capsys, monkeypatch):
    """`deploy model_repository --out . --force` beside the repository used to delete the repository (and every
    other file there) and write the bundle in its place."""
    proj = tmp_path / "proj"
    built_repo(proj / "model_repository")
    (proj / "notes.txt").write_text("my notes")
    (tmp_path / "link").symlink_to(proj, target_is_directory=True)
    before = contents(tmp_path)
    monkeypatch.chdir(proj)
    for out in (".", "..", str(proj), str(tmp_path / "link"), "model_repository"):
        code, _, err = run_cli(deploy(Path("model_repository"), target, out, "--force"), capsys)
        line = one_error(code, err)
        words = "inside the model repository" if out == "model_repository" else "holds the model repository"
        assert words in line and "--out deploy/" in line, (out, line)
        assert contents(tmp_path) == before, out
    # the repository given through a link: the folder holding the link holds it too
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(deploy(Path("link/model_repository"), target, "link", "--force"), capsys)
    assert "holds the model repository" in one_error(code, err)
    assert contents(tmp_path) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("target", TARGETS)
def test_force_replaces_only_an_empty_folder_or_a_bundle_tritongen_wrote(target, tmp_path, capsys, monkeypatch):
    repo = built_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(deploy(repo, target, home, "--force"), capsys)
    line = one_error(code, err)
    assert "is not a bundle tritongen deploy wrote" in line and MARKER_FILE in line and "choose a new folder" in line
    assert contents(home) == {"thesis.tex": "years of work"}
    # a marker that is a link (to a bundle elsewhere) does not make a folder a bundle
    other = tmp_path / "other"
    assert run_cli(deploy(repo, target, other), capsys)[0] == 0
    assert is_bundle(other) and (other / MARKER_FILE).is_file()
    (home / MARKER_FILE).symlink_to(other / MARKER_FILE)
    assert not is_bundle(home)
    code, _, err = run_cli(deploy(repo, target, home, "--force"), capsys)
    assert "is not a bundle tritongen deploy wrote" in one_error(code, err)
    assert (home / "thesis.tex").read_text() == "years of work"
    # an empty folder, and then the bundle written into it, are replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(deploy(repo, target, empty, "--force"), capsys)[0] == 0
    (empty / "README.md").write_text("edited")
    code, _, err = run_cli(deploy(repo, target, empty, "--force"), capsys)
    assert code == 0, err
    assert (empty / "README.md").read_text() != "edited" and is_bundle(empty)
    # not the current folder, bundle or not: the shell running the command would be left in a deleted folder
    monkeypatch.chdir(empty)
    code, _, err = run_cli(deploy(repo, target, ".", "--force"), capsys)
    assert "is the current folder" in one_error(code, err)
    assert is_bundle(empty) and (empty / "README.md").is_file()


# ------------------------------------------------------------------------------------------ compose.yaml


@pytest.mark.parametrize(
    "folder, char",
    [
        ("q\ninclude: [evil.yaml]\n#", "\\n"),  # would end compose.yaml's header comment and add a key
        ("x}y", "}"),  # would end ${TRITONGEN_REPOSITORY:-...}'s default early: another folder mounted
        ("a:b", ":"),  # would split the SRC:DST:ro volume
        ("c$HOME", "$"),  # Compose would interpolate it
        ("tab\there", "\\t"),
        ("line\u2028sep", "\\u2028"),
    ],
)
def test_a_repository_path_compose_cannot_hold_is_one_error(folder, char, tmp_path, capsys):
    repo = built_repo(tmp_path / folder / "repo")
    before = contents(tmp_path)
    code, _, err = run_cli(deploy(repo, "docker", tmp_path / "out"), capsys)
    line = one_error(code, err)
    assert "compose.yaml cannot mount" in line and char in line and "rename the folders" in line, line
    assert contents(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_repository_path_compose_can_hold_is_mounted_as_it_is(tmp_path, capsys):
    repo = built_repo(tmp_path / "my {models #1" / "repo")
    code, _, err = run_cli(deploy(repo, "docker", tmp_path / "out"), capsys)
    assert code == 0, err
    text = (tmp_path / "out" / "compose.yaml").read_text()
    compose = yaml.safe_load(text)
    assert set(compose) == {"name", "services"}
    assert compose["services"]["triton"]["volumes"] == ["${TRITONGEN_REPOSITORY:-../my {models #1/repo}:/models:ro"]
    assert all(line.startswith("#") for line in text.split("name:", 1)[0].splitlines() if line)


# ------------------------------------------------------------------------------------------ python packages


def test_an_extra_package_with_a_trailing_newline_is_refused(tmp_path, capsys):
    """The pin check ended in `$`, which matches before a final newline: the Dockerfile's RUN line was split."""
    repo = built_repo(tmp_path / "repo")
    for value in ("numpy=numpy==1.26.4\n", "numpy=numpy==1.26.4\r", "sklearn=scikit-learn==1.5.2\nRUN id"):
        code, _, err = run_cli(deploy(repo, "docker", tmp_path / "out", "--extra-package", value), capsys)
        line = one_error(code, err)
        assert "is not a pinned requirement" in line and "pin one version" in line, line
        assert not (tmp_path / "out").exists()
    code, _, err = run_cli(
        deploy(repo, "docker", tmp_path / "out", "--extra-package", "sklearn=scikit-learn==1.5.2"), capsys
    )
    assert code == 0, err


def test_an_extra_package_that_replaces_a_pin_is_named_and_two_pins_of_one_package_are_refused(tmp_path, capsys):
    """`--extra-package numpy=numpy==2.1.0` replaced tritongen's numpy pin without a word; two imports given two
    versions of one package kept whichever came last."""
    repo = built_repo(tmp_path / "repo")
    code, out, err = run_cli(deploy(repo, "docker", tmp_path / "out", "--extra-package", "numpy=numpy==2.1.0"), capsys)
    assert code == 0, err
    assert "note: it installs numpy==2.1.0 (--extra-package numpy) in place of tritongen's numpy==1.26.4" in out
    assert "numpy==2.1.0" in (tmp_path / "out" / "serving.Dockerfile").read_text()
    code, out, err = run_cli(
        deploy(repo, "docker", tmp_path / "same", "--extra-package", "numpy=numpy==1.26.4"), capsys
    )
    assert code == 0 and "in place of" not in out, err
    (repo / "double" / "1" / "model.py").write_text(
        DOUBLE_MODEL.replace("import numpy as np", "import numpy as np\nimport pkg_a\nimport pkg_b")
    )
    vouch(repo / "double")
    two = ["--extra-package", "pkg_a=shared-lib==1.0", "--extra-package", "pkg_b=shared-lib==2.0"]
    code, _, err = run_cli(deploy(repo, "docker", tmp_path / "two", *two), capsys)
    line = one_error(code, err)
    assert "two pins for package 'shared-lib': shared-lib==1.0 and shared-lib==2.0" in line, line
    assert not (tmp_path / "two").exists()


def test_python_models_are_found_however_the_config_spells_the_backend(tmp_path):
    repo = tmp_path / "repo"
    spellings = {
        "single": DOUBLE_CONFIG.replace('backend: "python"', "backend: 'python'"),
        "spaced": DOUBLE_CONFIG.replace('backend: "python"', 'backend :"python"  # a comment'),
        "split": DOUBLE_CONFIG.replace('backend: "python"', 'backend: "py" "thon"'),
        "inferred": DOUBLE_CONFIG.replace('backend: "python"\n', ""),  # Triton infers it from 1/model.py
    }
    for name, config in spellings.items():
        write_model(repo, name, config.replace('name: "double"', f'name: "{name}"'), DOUBLE_MODEL)
    onnx = repo / "onnx"
    (onnx / "1").mkdir(parents=True)
    (onnx / "config.pbtxt").write_text('name: "onnx"\nbackend: "onnxruntime"\n# backend: "python"\n')
    assert [p.name for p in python_models(repo)] == sorted(spellings)


def test_a_single_quoted_python_backend_is_scanned_for_its_imports(tmp_path, capsys):
    """`backend: 'python'` skipped the scan: the bundle used NGC's stock image, which lacks the model's packages."""
    repo = tmp_path / "repo"
    config = DOUBLE_CONFIG.replace('backend: "python"', "backend: 'python'")
    write_model(repo, "double", config, "import sklearn\n" + DOUBLE_MODEL)
    code, _, err = run_cli(deploy(repo, "docker", tmp_path / "d", "--allow-unverified", "double"), capsys)
    assert "imports 'sklearn'" in one_error(code, err) and not (tmp_path / "d").exists()
    for target in ("kubernetes", "kserve"):
        code, _, err = run_cli(deploy(repo, target, tmp_path / "k", "--allow-unverified", "double"), capsys)
        line = one_error(code, err)
        assert line.startswith("error: NGC's Triton image") and "sklearn" in line and not (tmp_path / "k").exists()


# ------------------------------------------------------------------------------------------ cluster targets


@pytest.mark.parametrize("target", ("kubernetes", "kserve"))
def test_cluster_bundles_are_made_from_verified_repositories_only(target, tmp_path, capsys):
    repo = built_repo(tmp_path / "repo")
    (repo / "double" / "1" / "evil.py").write_text("import os\nos.system('id')\n")
    code, _, err = run_cli(deploy(repo, target, tmp_path / "out"), capsys)
    line = one_error(code, err)
    assert "evil.py is not listed in any manifest" in line and not (tmp_path / "out").exists()
    # a hand-written model: refused unless named, as for --to docker
    hand = tmp_path / "hand"
    write_model(hand, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    code, _, err = run_cli(deploy(hand, target, tmp_path / "out"), capsys)
    assert "--allow-unverified double" in one_error(code, err) and not (tmp_path / "out").exists()
    code, _, err = run_cli(deploy(hand, target, tmp_path / "out", "--allow-unverified", "double"), capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "namespace, words",
    [
        ('prod",job=~".*', "is not a Kubernetes namespace name"),
        ("Prod", "is not a Kubernetes namespace name"),
        ("-prod", "is not a Kubernetes namespace name"),
        ("prod-", "is not a Kubernetes namespace name"),
        ("pr_od", "is not a Kubernetes namespace name"),
        ("", "is not a Kubernetes namespace name"),
        ("prod\n", "is not a Kubernetes namespace name"),
        ("a" * 60, "60 characters long, above 59"),  # its dev overlay's a...a-dev would be 64
    ],
)
@pytest.mark.parametrize("target", ("kubernetes", "kserve"))
def test_a_namespace_kubernetes_would_refuse_is_one_error(target, namespace, words, tmp_path, capsys):
    repo = built_repo(tmp_path / "repo")
    code, _, err = run_cli(deploy(repo, target, tmp_path / "out", "--namespace", namespace), capsys)
    line = one_error(code, err)
    assert words in line and "lowercase letters, digits and '-'" in line, line
    assert not (tmp_path / "out").exists()


def test_the_longest_namespace_leaves_room_for_the_dev_overlay(tmp_path, capsys):
    repo = built_repo(tmp_path / "repo")
    namespace = "a" * 59
    code, _, err = run_cli(deploy(repo, "kubernetes", tmp_path / "out", "--namespace", namespace), capsys)
    assert code == 0, err
    dev = yaml.safe_load((tmp_path / "out" / "overlays" / "dev" / "kustomization.yaml").read_text())
    assert dev["namespace"] == namespace + "-dev" and len(dev["namespace"]) == 63
    shutil.rmtree(tmp_path / "out")


def test_package_names_are_compared_as_pypi_normalizes_them(tmp_path):
    from tritongen.deploy.python_deps import serving_packages_from_repository

    repo = tmp_path / "repo"
    write_model(
        repo,
        "double",
        DOUBLE_CONFIG,
        DOUBLE_MODEL.replace("import numpy as np", "import numpy as np\nimport a\nimport b"),
    )
    one = serving_packages_from_repository(repo, {"a": "Shared_Lib==1.0", "b": "shared-lib==1.0"})
    assert [r for r in one.requirements if r.lower().startswith("shared")] == ["Shared_Lib==1.0"]
    with pytest.raises(TritongenError, match="two pins for package 'shared-lib'"):
        serving_packages_from_repository(repo, {"a": "shared.lib==1.0", "b": "Shared-Lib==2.0"})


@pytest.mark.parametrize("target", TARGETS)
def test_a_bundle_says_which_rollout_record_it_does_not_follow(tmp_path, capsys, target):
    """A bundle serves config.pbtxt's versions (the newest by default), whatever the rollout record says is live:
    its summary says so, with the command that returns a running server to the recorded version."""
    import json

    repo = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent  # by hand: allowed unverified
    (repo / "double" / "2").mkdir()
    (repo / "double" / "2" / "model.py").write_text(DOUBLE_MODEL)
    record = {"tool": "tritongen-rollout", "model": "double", "live": 1, "previous": 2, "pending": None}
    event = {"at": "2026-12-06T09:00:00Z", "action": "rollback", "from": 2, "to": 1, "result": "promoted"}
    (repo / "double" / "tritongen-rollout.json").write_text(json.dumps({**record, "history": [event]}))
    code, out, err = run_cli(deploy(repo, target, tmp_path / "out", "--allow-unverified", "double"), capsys)
    assert code == 0, err
    (note,) = [line for line in out.splitlines() if line.startswith("note: 'double'")]
    assert "its rollout record says version 1 is live (rollback 2 -> 1 at 2026-12-06T09:00:00Z)" in note
    assert "(model control none) serves config.pbtxt's versions (2)" in note
    assert f"tritongen rollback {repo} double --to-version 1" in note
    # rollback refuses a server without explicit model control, which the bundle's Triton runs by default
    assert "add --model-control-mode=explicit --load-model=* to tritonserver's command" in note
    if target == "docker":
        code, out, err = run_cli(["serve", str(repo), "--docker", "--allow-unverified", "double"], capsys)
        assert code == 0 and "# note: 'double': its rollout record says version 1 is live" in out, (out, err)
        # --ignore-rollout-record asks for config.pbtxt's versions, which the image serves: nothing to note
        code, out, err = run_cli(
            ["serve", str(repo), "--docker", "--allow-unverified", "double", "--ignore-rollout-record"], capsys
        )
        assert code == 0 and "docker run" in out and "rollout record" not in out, (out, err)


@pytest.mark.parametrize("target", TARGETS)
def test_a_record_with_a_version_no_folder_can_name_is_skipped_and_the_bundle_written(tmp_path, capsys, target):
    """``"live": 10**300`` (verify accepts the record's form) made deploy fail with "File name too long" after it had
    written a complete-looking bundle, and tritongen.deploy raise a plain OSError: the record is malformed, skipped
    like every unreadable one."""
    import json

    import tritongen

    repo = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent
    record = {"tool": "tritongen-rollout", "model": "double", "live": 10**300, "previous": None, "pending": None}
    (repo / "double" / "tritongen-rollout.json").write_text(json.dumps({**record, "history": []}))
    code, out, err = run_cli(deploy(repo, target, tmp_path / "out", "--allow-unverified", "double"), capsys)
    assert code == 0 and "note:" not in out and is_bundle(tmp_path / "out"), (out, err)
    bundle = tritongen.deploy(repo, to=target, out=tmp_path / "api", allow_unverified=["double"])
    assert bundle.notes == () and is_bundle(tmp_path / "api")


@pytest.mark.parametrize("target", TARGETS)
def test_the_rollout_notes_are_read_before_the_bundle_is_written(tmp_path, capsys, monkeypatch, target):
    """A failure reading the records left a whole bundle behind an error line: they are read first now."""
    from tritongen.deploy import docker, k8s_bundle

    def failing(repo):
        raise TritongenError("the records cannot be read", "fix them")

    for module in (docker, k8s_bundle):
        monkeypatch.setattr(module, "unfollowed_records", failing)
    repo = built_repo(tmp_path / "repo")
    code, _, err = run_cli(deploy(repo, target, tmp_path / "out"), capsys)
    assert "the records cannot be read" in one_error(code, err) and not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging folder either


def test_a_bundle_that_cannot_be_written_is_one_error_from_the_api_too(tmp_path):
    from tritongen.deploy.bundle import write_bundle

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(
        TritongenError, match="cannot write the bundle .*/file/out: .*check that its folder is writable"
    ):
        write_bundle(tmp_path / "file" / "out", {"README.md": "x"}, force=False)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize(
    "body, why",
    [
        ("x = " + "1+" * 200_000 + "1\n", "RecursionError"),  # nesting the parser's recursion cannot follow
        ("x = " + "-" * 200_000 + "1\n", "MemoryError"),
    ],
)
def test_python_code_the_parser_cannot_follow_is_one_error_naming_the_file(tmp_path, capsys, body, why):
    """ast.parse raised RecursionError or MemoryError, which only SyntaxError was caught around: a traceback from
    deploy --to docker|kubernetes and serve --docker."""
    repo = tmp_path / "repo"
    vouch(write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL + body))  # verified: every target takes it
    model_py = repo / "double" / "1" / "model.py"
    for target in ("docker", "kubernetes"):
        code, _, err = run_cli(deploy(repo, target, tmp_path / "out"), capsys)
        assert f"{model_py} cannot be parsed ({why})" in one_error(code, err) and not (tmp_path / "out").exists()
    code, out, err = run_cli(["serve", str(repo), "--docker"], capsys)
    assert code == 0 and "Traceback" not in err and f"{model_py} cannot be parsed ({why})" in out, (out, err)
