"""tritongen.layout: the one list of a repository's models that every did-you-mean and "models there" reads."""

from __future__ import annotations

import pytest

from tritongen.errors import TritongenError
from tritongen.layout import latest_artifacts, repository_models
from tritongen.names import listed


def _model(repo, name, config=True):
    (repo / name).mkdir(parents=True)
    if config:
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\n')


def test_a_repositorys_models_are_its_folders_with_a_config_not_hidden_ones_and_at_most_the_limit(tmp_path):
    for name in ("b", "a", "c"):
        _model(tmp_path, name)
    _model(tmp_path, "no_config", config=False)
    _model(tmp_path, ".hidden")
    (tmp_path / "file.txt").write_text("x")
    assert repository_models(tmp_path) == ["a", "b", "c"]
    assert len(repository_models(tmp_path, limit=2)) == 2
    assert repository_models(tmp_path / "missing") == [] and repository_models(tmp_path / "file.txt") == []


def test_no_build_suggests_only_a_model_not_any_folder(tmp_path):
    _model(tmp_path, "double")
    _model(tmp_path, "doubles", config=False)  # a stray folder: no model, so no suggestion of it
    with pytest.raises(TritongenError) as err:
        latest_artifacts(tmp_path, "doubel")
    assert "did you mean 'double'?" in err.value.fix
    _model(tmp_path / "other", "lone", config=False)
    with pytest.raises(TritongenError) as err:
        latest_artifacts(tmp_path / "other", "lonf")
    assert "did you mean" not in err.value.fix


def test_a_list_of_names_shows_the_first_five_escaped_and_how_many():
    assert listed(["a", "b"]) == "a, b"
    assert listed([f"m{i}" for i in range(7)]) == "m0, m1, m2, m3, m4, ... (7 in all)"
    assert listed(["x\ny"]) == "x\\ny"


def test_a_version_folder_is_named_by_ascii_digits_as_triton_reads_it():
    from tritongen.layout import version_of_folder

    assert [version_of_folder(n) for n in ("0", "1", "12")] == [0, 1, 12]
    for name in ("01", "9x", "\u00b2", "+3", "-1", " 7", "warmup", "9" * 20):
        assert version_of_folder(name) is None, name


def test_a_folder_that_isdigit_but_is_no_version_is_no_plan_to_build_and_no_traceback(tmp_path):
    """``m/\u00b2/tritongen/engine.json`` made validate, serve and deploy raise ValueError from int('\u00b2'); ``m/01/``
    (which Triton ignores) was named a plan to build."""
    from tritongen.layout import ARTIFACT_DIR, ENGINE_PLAN_NAME
    from tritongen.plan_compat import pending_plans_from_repository

    _model(tmp_path, "m")
    for version in ("\u00b2", "01", "2"):
        (tmp_path / "m" / version / ARTIFACT_DIR).mkdir(parents=True)
        (tmp_path / "m" / version / ARTIFACT_DIR / ENGINE_PLAN_NAME).write_text("{}")
    assert pending_plans_from_repository(tmp_path) == {"m": [2]}
