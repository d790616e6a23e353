"""A model of a repository is named the same way in every command that acts on one: REPO NAME or its folder
REPO/NAME (tritongen/cli_options.py repo_and_name; infer's NAME may be the folder too)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tritongen
from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, run_cli, write_model
from tritongen.cli_options import repo_and_name
from tritongen.errors import TritongenError


@pytest.fixture
def repo(tmp_path) -> Path:
    write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    return tmp_path / "repo"


def test_both_forms_name_the_same_model(repo):
    assert repo_and_name((str(repo), "double"), "rollout") == (repo, "double")
    assert repo_and_name((str(repo / "double"),), "rollout") == (repo, "double")


def test_a_repository_alone_or_too_many_arguments_are_refused_with_the_form_that_works(repo, tmp_path):
    with pytest.raises(TritongenError) as err:
        repo_and_name((str(repo),), "rollback")
    assert (
        "is a model repository, not a model: rollback needs the model too (models there: double)" in err.value.message
    )
    assert f"tritongen rollback {repo} double" in err.value.fix
    with pytest.raises(TritongenError, match="is not a model folder"):
        repo_and_name((str(tmp_path / "nowhere"),), "rollback")
    with pytest.raises(TritongenError, match="takes one model, got 3 arguments"):
        repo_and_name((str(repo), "double", "x"), "rollout")


def test_rollout_and_rollback_take_the_folder(repo, capsys):
    """A version that is not there is refused after the arguments are read: both forms get that far alike."""
    for model in ([str(repo), "double"], [str(repo / "double")]):
        code, _, err = run_cli(["rollout", *model, "--to-version", "7", "--allow-unverified", "double"], capsys)
        assert code == 1 and "model 'double' has no version 7" in err, err
    code, _, err = run_cli(["rollback", str(repo), "--to-version", "1"], capsys)
    assert code == 1 and "is a model repository, not a model: rollback needs the model too" in err, err


def test_tune_takes_repo_and_name_and_names_the_models_of_a_repository(repo, capsys):
    code, _, err = run_cli(["tune", str(repo), "--max-p99-ms", "10"], capsys)
    assert code == 1 and "is a model repository, not a model: tune needs the model too (models there: double)" in err, (
        err
    )


def test_infer_takes_the_models_folder_for_its_name_and_repository(repo, capsys, monkeypatch):
    from tritongen import api

    seen = {}

    def infer(name, **options):  # the API call the CLI makes: what it was given is the point here
        seen.update(name=name, repo=options["repo"])
        raise TritongenError("stop here", "nothing")

    monkeypatch.setattr(api, "infer", infer)
    code, _, err = run_cli(["infer", str(repo / "double")], capsys)
    assert code == 1 and seen == {"name": "double", "repo": repo.resolve()}, (seen, err)
    code, _, err = run_cli(["infer", str(repo / "double"), "--repo", str(repo.parent)], capsys)
    assert code == 1 and "is a model folder of" in err and "but --repo names" in err, err
    seen.clear()
    run_cli(["infer", "double", "--repo", str(repo)], capsys)  # a plain name stays a name
    assert seen == {"name": "double", "repo": repo}


def test_a_linked_model_folder_is_named_by_its_link_as_repo_name_would_name_it(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / "double").rename(elsewhere / "double")
    (repo / "double").symlink_to(elsewhere / "double")
    assert repo_and_name((str(repo / "double"),), "rollout") == (repo, "double")  # not elsewhere/


def test_the_api_takes_the_models_folder_for_its_name_as_the_cli_does(repo):
    """tritongen.infer("model_repository/double") said "no build of model 'model_repository/double' in
    model_repository"; the folder names the model and its repository, as `tritongen infer REPO/NAME` does."""
    from tritongen.infer import model_from_folder

    assert model_from_folder(str(repo / "double"), None) == ("double", repo.resolve())
    assert model_from_folder(str(repo / "double"), repo) == ("double", repo.resolve())
    assert model_from_folder("double", repo) == ("double", None)
    with pytest.raises(TritongenError, match="is a model folder of"):
        model_from_folder(str(repo / "double"), repo.parent)
    with pytest.raises(TritongenError, match="is a model folder of"):  # the API call goes through it
        tritongen.infer(str(repo / "double"), repo=repo.parent, url="127.0.0.1:1")


@pytest.mark.parametrize("command", ["infer", "perf"])
def test_a_repository_given_to_infer_or_perf_for_the_model_is_refused_with_its_models(tmp_path, capsys, command):
    """`tritongen infer repo` asked the server for a model named 'repo' ("no build of model 'repo'")."""

    write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    code, _, err = run_cli([command, str(tmp_path / "repo"), "--url", "127.0.0.1:9"], capsys)
    assert code == 1 and err.startswith(
        f"error: {tmp_path / 'repo'} is a model repository, not a model: {command} needs the model too "
        "(models there: double)"
    )
    assert f"name the model: tritongen {command} {tmp_path / 'repo' / 'double'}" in err


def test_a_repository_of_many_models_is_listed_with_how_many_it_holds(tmp_path, capsys):
    for i in range(7):
        write_model(tmp_path / "repo", f"m{i}", DOUBLE_CONFIG.replace('"double"', f'"m{i}"'), DOUBLE_MODEL)
    code, _, err = run_cli(["infer", str(tmp_path / "repo"), "--url", "127.0.0.1:9"], capsys)
    assert code == 1 and "(models there: m0, m1, m2, m3, m4, ... (7 in all))" in err
    code, _, err = run_cli(["tune", str(tmp_path / "repo"), "--max-p99-ms", "5"], capsys)
    assert code == 1 and "(models there: m0, m1, m2, m3, m4, ... (7 in all))" in err


@pytest.mark.parametrize("command", [["infer"], ["perf"], ["rollback", "--to-version", "1"]])
def test_a_typo_in_the_model_folders_name_names_the_repository_and_its_models(repo, capsys, command):
    """`infer repo/doubel` said "no build of model 'repo/doubel' in model_repository": the whole path taken for a
    model's name, the default repository named, no did-you-mean."""
    code, out, err = run_cli([command[0], str(repo / "doubel"), *command[1:]], capsys)
    assert code == 1 and err.strip() == (
        f"error: the model repository {repo} holds no model 'doubel' (models there: double): did you mean 'double'? "
        "check the model's name"
    ), err


def test_a_folder_without_a_config_is_not_called_a_typo(repo, capsys):
    """A folder that is there but holds no config.pbtxt was said to be missing from the repository."""
    (repo / "empty").mkdir()
    code, out, err = run_cli(["rollback", str(repo / "empty"), "--to-version", "1"], capsys)
    assert code == 1 and "is not a model folder (no config.pbtxt in it)" in err and "holds no model" not in err, err
