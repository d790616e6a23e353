from pathlib import Path

import pytest

from tests import factories
from tritongen.build import build
from tritongen.errors import TritongenError
from tritongen.spec import build_spec_from_options
from tritongen.verify import check_verified, verify_repository


@pytest.fixture
def repo(tmp_path) -> Path:
    model = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    build(build_spec_from_options(model, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=4, repo=tmp_path / "repo"))
    build(
        build_spec_from_options(
            model, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=2, repo=tmp_path / "repo", new_version=True
        )
    )
    return tmp_path / "repo"


def test_untouched_repository_verifies(repo):
    report = check_verified(repo)
    assert report.ok and report.checked_files >= 10  # both versions' files plus the shared config and warm-up


@pytest.mark.parametrize(
    "rel, action, words",
    [
        ("seq/1/model.onnx", "swap", "seq/1/model.onnx does not match"),
        ("seq/2/tritongen/samples.npz", "truncate", "seq/2/tritongen/samples.npz does not match"),
        ("seq/config.pbtxt", "swap", "seq/config.pbtxt does not match"),
        ("seq/2/model.py", "delete", "seq/2/model.py is missing"),
    ],
)
def test_changed_files_are_named(repo, rel, action, words):
    target = repo / rel
    if action == "swap":
        target.write_bytes(target.read_bytes() + b" ")
    elif action == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.unlink()
    with pytest.raises(TritongenError, match=words):
        check_verified(repo)


def test_hand_written_models_fail_unless_allowed_by_name(repo):
    (repo / "handmade" / "1").mkdir(parents=True)
    with pytest.raises(TritongenError, match="model 'handmade' has no manifest.*--allow-unverified handmade"):
        check_verified(repo)
    report = verify_repository(repo, allow_unverified=["handmade"])
    assert report.ok and report.unverified_models == ("handmade",)
    assert "handmade" in report.summary()


def test_an_allowed_name_that_is_no_model_folder_is_refused(repo):
    """A typo (or a model removed since) in --allow-unverified is named, not silently accepted."""
    (repo / "handmade" / "1").mkdir(parents=True)
    with pytest.raises(TritongenError, match=r"--allow-unverified names 'handmad', which is no model folder") as err:
        check_verified(repo, allow_unverified=["handmade", "handmad"])
    # the typo comes first, before what it causes (the model it meant has no manifest)
    with pytest.raises(TritongenError, match=r"^--allow-unverified names 'handmad', which is no model folder"):
        check_verified(repo, allow_unverified=["handmad"])
    assert "handmade" in str(err.value) and err.value.fix.startswith("name a model folder")


def _unchecked_hash_pyc(cache: Path, code_text: str, filename: str) -> None:
    """An "unchecked hash-based" .pyc (PEP 552): Python runs it without looking at the source it sits beside."""
    import importlib.util
    import marshal

    code = compile(code_text, filename, "exec")
    cache.parent.mkdir(exist_ok=True)
    cache.write_bytes(importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + b"\0" * 8 + marshal.dumps(code))


def test_a_hand_written_model_allowed_unverified_still_runs_no_bytecode_but_its_source_compiled(repo):
    """The signature and the manifests leave __pycache__/ out (the server writes it after signing); a model allowed
    unverified has no manifest to compare its caches with, so they are compared with its source as it is: the
    source compiled passes, other code under the cache's name (an unchecked hash-based .pyc, which Python runs
    whatever the source says) or a stray file in the cache folder does not."""
    import importlib.util
    import py_compile

    source = repo / "hand" / "1" / "model.py"
    source.parent.mkdir(parents=True)
    source.write_text("class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    cache = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(cache), doraise=True)
    report = verify_repository(repo, allow_unverified=["hand"])
    assert report.ok and report.unverified_models == ("hand",), report.problems
    _unchecked_hash_pyc(cache, "open('PWNED', 'w')\n" + source.read_text(), str(source))
    with pytest.raises(TritongenError, match=r"hand/1/__pycache__/model\.cpython-\d+\.pyc is not the bytecode of"):
        check_verified(repo, allow_unverified=["hand"])
    cache.unlink()
    (cache.parent / "helper.cpython-311.pyc").write_bytes(b"x")
    with pytest.raises(TritongenError, match=r"hand/1/__pycache__/helper\.cpython-311\.pyc is not the bytecode cache"):
        check_verified(repo, allow_unverified=["hand"])


def test_every_model_of_a_generated_ensemble_is_verified(tmp_path):
    """The pre/post-processing steps carry manifests too: a swapped step file is caught, not skipped."""
    from tests.test_ensemble import POST_PY, PRE_PY
    from tritongen.cli import main

    pair = factories.save_model(
        factories.make_two_in_two_out(), tmp_path / "pair.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    (tmp_path / "pre.py").write_text(PRE_PY)
    (tmp_path / "post.py").write_text(POST_PY)
    repo = tmp_path / "repo"
    main(
        [
            "build",
            str(pair),
            "--name",
            "pair",
            "--input",
            "a:FP32:4",
            "--input",
            "b:FP32:4",
            "--output",
            "sum",
            "--output",
            "product",
            "--preprocess",
            str(tmp_path / "pre.py"),
            "--postprocess",
            str(tmp_path / "post.py"),
            "--repo",
            str(repo),
            "--max-batch-size",
            "4",
        ]
    )
    report = check_verified(repo)
    assert report.unverified_models == () and report.checked_files >= 8
    step = repo / "pair_preprocess" / "1" / "model.py"
    step.write_text(step.read_text() + "\n# changed\n")
    with pytest.raises(TritongenError, match="pair_preprocess/1/model.py does not match"):
        check_verified(repo)


def test_python_bytecode_cache_is_accepted_only_as_the_compiled_verified_source(repo):
    """The Python backend writes __pycache__/model.cpython-3XY.pyc into the version folder when it loads model.py
    (its embedded interpreter ignores PYTHONDONTWRITEBYTECODE). Python runs that file instead of the source, so it
    is checked: the exact bytecode of the verified model.py passes, other bytecode under its name does not."""
    import importlib.util
    import py_compile

    source = repo / "seq" / "2" / "model.py"
    cache = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(cache), doraise=True)  # what the server's import writes
    assert check_verified(repo).ok
    evil = repo.parent / "evil.py"
    evil.write_text("import os\nos.system('touch PWNED')\n")
    py_compile.compile(str(evil), cfile=str(cache), dfile=str(source), doraise=True)
    with pytest.raises(
        TritongenError, match=r"seq/2/__pycache__/model\.cpython-\d+\.pyc is not the bytecode of its verified source"
    ):
        check_verified(repo)
    cache.unlink()
    py_compile.compile(str(source), cfile=str(cache.with_name("numpy" + cache.name[len("model") :])), doraise=True)
    with pytest.raises(
        TritongenError, match=r"seq/2/__pycache__/numpy\.cpython-\d+\.pyc is not listed in any manifest"
    ):
        check_verified(repo)


@pytest.mark.parametrize(
    "compiled_at", ["/srv/old/seq/2/model.py", "/a/" + "long/" * 60 + "seq/2/model.py", "/tmp/é/seq/2/model.py"]
)
def test_a_bytecode_cache_compiled_where_the_repository_was_before_it_moved_passes(repo, compiled_at):
    """The cache names the path it was compiled from (what tracebacks print and read): a repository copied or moved
    after Triton loaded it holds caches compiled elsewhere. The verified source compiled under any absolute path to
    the same model file passes (short, long and non-ASCII paths marshal differently); a path to another file, other
    code under the right path, or one byte changed does not."""
    import importlib.util
    import py_compile

    source = repo / "seq" / "2" / "model.py"
    cache = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(cache), dfile=compiled_at, doraise=True)
    assert check_verified(repo).ok
    evil = repo.parent / "evil.py"
    evil.write_text(source.read_text() + "\nimport os\n")
    py_compile.compile(str(evil), cfile=str(cache), dfile=compiled_at, doraise=True)
    with pytest.raises(TritongenError, match=r"model\.cpython-\d+\.pyc is not the bytecode of its verified source"):
        check_verified(repo)
    for elsewhere in ("/etc/passwd", "seq/2/model.py", "/srv/other/2/model.py"):  # another file; not absolute
        py_compile.compile(str(source), cfile=str(cache), dfile=elsewhere, doraise=True)
        with pytest.raises(TritongenError, match=r"is not the bytecode of its verified source"):
            check_verified(repo)
    py_compile.compile(str(source), cfile=str(cache), dfile=compiled_at, doraise=True)
    data = bytearray(cache.read_bytes())
    data[-1] ^= 1  # the last byte of the code, after the path
    cache.write_bytes(bytes(data))
    with pytest.raises(TritongenError, match=r"model\.cpython-\d+\.pyc is not the bytecode of its verified source"):
        check_verified(repo)


def test_manifests_carry_a_schema_version_and_older_ones_without_it_still_verify(repo):
    import json

    from tritongen.manifest import MANIFEST_SCHEMA

    path = repo / "seq" / "2" / "tritongen" / "manifest.json"
    data = json.loads(path.read_text())
    assert data["manifest_schema"] == MANIFEST_SCHEMA  # written by the build
    del data["manifest_schema"]  # as tritongen wrote them before the field existed
    path.write_text(json.dumps(data))
    assert check_verified(repo).ok
    path.write_text(json.dumps({**data, "manifest_schema": MANIFEST_SCHEMA + 1}))
    with pytest.raises(
        TritongenError, match=f"manifest_schema {MANIFEST_SCHEMA + 1}, this tritongen reads {MANIFEST_SCHEMA}"
    ):
        check_verified(repo)


def test_a_model_whose_version_folders_are_gone_is_named_so(repo):
    import shutil

    for version in ("1", "2"):
        shutil.rmtree(repo / "seq" / version)
    with pytest.raises(TritongenError, match=r"model 'seq' has no version folder \(1/, 2/, \.\.\.\), so Triton cannot"):
        check_verified(repo)


@pytest.mark.parametrize("folder, version", [("9x", 9), ("+1", 1), (" 2", 2), ("-1", -1), ("2.0", 2)])
def test_a_folder_triton_reads_as_a_version_is_a_problem_even_empty(repo, folder, version):
    """Triton reads the leading digits of a sub-folder's name (std::stoll) and loads that version from its own
    folder: an empty 9x/ made Triton 2.51 load version 9 ('loading: seq:9') and fail, yet verify passed."""
    (repo / "seq" / folder).mkdir()
    with pytest.raises(TritongenError) as err:
        check_verified(repo)
    assert f"folder '{folder}' of model 'seq' is read by Triton as version {version}" in err.value.problem
    assert "rename it to" in err.value.fix and "or remove it" in err.value.fix


def test_a_folder_triton_does_not_read_as_a_version_is_not_a_problem(repo):
    for folder in ("01", "x9", "configs"):  # ignored by Triton: a leading zero, no leading digit
        (repo / "seq" / folder).mkdir()
    assert check_verified(repo).ok
