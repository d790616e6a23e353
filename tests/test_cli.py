"""The command line as a user meets it: real processes, exit codes, one-line errors, no tracebacks."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def tritongen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "tritongen", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    first = errors[0]
    for word in words:
        assert word in first, first


@pytest.fixture(scope="module")
def conv_ts(tmp_path_factory) -> Path:
    return factories.save_model(
        factories.make_small_conv(),
        tmp_path_factory.mktemp("m") / "conv.pt",
        "torchscript-trace",
        factories.small_conv_inputs(),
    )


def test_build_then_validate(tmp_path, conv_ts):
    repo = tmp_path / "repo"
    proc = tritongen(
        "build",
        str(conv_ts),
        "--name",
        "conv",
        "--input",
        "x:FP32:3,32,32",
        "--max-batch-size",
        "4",
        "--repo",
        str(repo),
    )
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stdout and "parity" not in proc.stdout.lower() or "ok" in proc.stdout
    assert "[3/8] exporting to ONNX" in proc.stderr
    proc = tritongen("validate", str(repo))
    assert proc.returncode == 0, proc.stderr
    assert "conv" in proc.stdout


@pytest.mark.parametrize(
    "make_input, args, words",
    [
        (lambda d: d / "missing.pt", ["--input", "x:FP32:3"], ["does not exist"]),
        (
            lambda d: _write(d / "notes.pt", b"just some text, not a model\n"),
            ["--input", "x:FP32:3"],
            ["not a model file"],
        ),
        (
            lambda d: _zip(d / "archive.pt"),
            ["--input", "x:FP32:3"],
            ["zip archive but not a PyTorch one", "TorchScript"],
        ),
        (None, ["--input", "x:FP32"], ["NAME:DTYPE:DIMS"]),
        (None, ["--input", "x:FP32:3,0,32"], ["a dimension of size 0 (dims 3,0,32)"]),
        (
            None,
            ["--input", "x:INT64:3,32,32"],
            ["model failed on inputs x[2, 3, 32, 32] int64", "expected scalar type"],
        ),
        (None, ["--input", "x:FP32:3,32,32", "--name", "../escape"], ["not a valid folder name"]),
    ],
)
def test_bad_build_input_gives_one_clean_line(tmp_path, conv_ts, make_input, args, words):
    model = make_input(tmp_path) if make_input else conv_ts
    repo = tmp_path / "repo"
    proc = tritongen("build", str(model), "--repo", str(repo), *args)
    assert_clean_error(proc, *words)
    assert not repo.exists(), "no partial repository"


def test_unwritable_output_folder(tmp_path, conv_ts):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path on a read-only file system
            target = Path("/proc/tritongen-repo")
        else:
            target = locked / "repo"
        proc = tritongen("build", str(conv_ts), "--input", "x:FP32:3,32,32", "--repo", str(target))
        assert_clean_error(proc, "repository folder")
        assert not target.exists()
    finally:
        locked.chmod(0o700)


def test_validate_rejects_broken_config(tmp_path):
    model = tmp_path / "repo" / "bad"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "bad"\nbackend: "python"\nmax_batch_size: 4\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 0 ] } ]\n'
    )
    (model / "1" / "model.py").write_text("")
    proc = tritongen("validate", str(tmp_path / "repo"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "bad" in proc.stderr


def test_help_and_version():
    proc = tritongen("--help")
    assert proc.returncode == 0 and "build" in proc.stdout and "serve" in proc.stdout
    assert tritongen("--version").stdout.strip().startswith("tritongen, version")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "a zip that is not TorchScript")
    return path


def test_infer_with_an_empty_text_says_what_to_send():
    done = tritongen("infer", "minilm", "--text", "  ")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: --text is empty: pass the sentence to embed or classify, e.g. --text 'a short sentence'"
    ]


def test_help_lists_every_command_without_cutting_its_description():
    done = tritongen("--help")
    commands = done.stdout.split("Commands:", 1)[1].strip().splitlines()
    assert len(commands) >= 9 and not [c for c in commands if c.rstrip().endswith("...")], commands
    build_help = tritongen("build", "--help").stdout
    assert "Examples:" in build_help and "tritongen build resnet.pt --name resnet" in build_help
    # every form the README's table lists (the detection reads the content, not the extension)
    for form in ("TorchScript", "torch.export .pt2", "state_dict", "pickled module", "ONNX file", "Hugging Face"):
        assert form in " ".join(build_help.split()), form
    assert "tritongen build model.onnx" in build_help
    for command in ("infer", "perf", "tune", "rollout", "rollback"):  # the commands a newcomer types next, too
        text = tritongen(command, "--help").stdout
        assert "Examples:" in text and f"tritongen {command} " in text.split("Examples:", 1)[1], command


def test_serve_names_the_next_commands_for_the_models_users_call():
    from tritongen.cli import _next_steps

    lines = _next_steps(
        ("minilm", "minilm_model", "minilm_postprocess", "minilm_preprocess"), "127.0.0.1:8001", Path("repo")
    )
    assert lines[1].split("#")[0].split() == [
        "tritongen",
        "infer",
        "minilm",
        "--repo",
        "repo",
        "--url",
        "127.0.0.1:8001",
        "--check",
    ]
    assert "tritongen perf minilm " in lines[2]
    assert "conv_model" in _next_steps(("conv_model",), "h:1", Path("r"))[1]  # a model of that name alone is entry
    # on ports of its own the metrics URL is named: perf guesses it only beside Triton's default ports
    assert "--metrics-url 127.0.0.1:34765 " in _next_steps(("m",), "127.0.0.1:55177", Path("r"), "127.0.0.1:34765")[2]
    assert "--metrics-url" not in _next_steps(("m",), "127.0.0.1:8001", Path("r"), "127.0.0.1:8002")[2]
    assert "--metrics-url 127.0.0.1:40001" in _next_steps(("m",), "127.0.0.1:8001", Path("r"), "127.0.0.1:40001")[2]
    assert "--repo '/d/my repo' " in _next_steps(("m",), "h:1", Path("/d/my repo"))[1]  # one argument as typed


def test_serve_names_commands_that_work_for_a_hand_written_model(tmp_path):
    """A model no build wrote has no saved samples or reference: --check and the default inputs cannot work, so
    its commands take inputs; a built model beside it is named first."""
    from tritongen.cli import _next_steps
    from tritongen.layout import has_manifest

    (tmp_path / "hand" / "1").mkdir(parents=True)
    (tmp_path / "built" / "2" / "tritongen").mkdir(parents=True)
    (tmp_path / "built" / "2" / "tritongen" / "manifest.json").write_text("{}")
    assert not has_manifest(tmp_path / "hand") and has_manifest(tmp_path / "built")
    lines = _next_steps(("hand",), "127.0.0.1:8001", tmp_path, "127.0.0.1:8002", built=set())
    words = " ".join(lines).split()
    assert "--check" not in words and "--repo" not in words
    assert lines[1].split("#")[0].split() == [
        "tritongen",
        "infer",
        "hand",
        "--url",
        "127.0.0.1:8001",
        "--input-file",
        "inputs.npz",
    ]
    assert "tritongen perf hand --url 127.0.0.1:8001 --input-data inputs.npz" in lines[2]
    assert "tritongen infer built --repo" in _next_steps(("built", "hand"), "h:1", tmp_path, built={"built"})[1]


TOLERANCES = {"atol": 1e-5, "rtol": 1e-3}


def test_serve_names_a_model_whose_check_works(tmp_path):
    """Before, the first model alphabetically was named with --check: an image/custom ensemble (no end-to-end
    reference: "ensemble 'custom' has no end-to-end reference") or a text ensemble with an INT8 model step (its
    reference is FP32 PyTorch's) fails there; a text ensemble of FP32, or a model step, checks."""
    import json

    from tritongen.cli import _next_steps

    def made(name: str, files: tuple[str, ...], **manifest) -> None:
        artifacts = tmp_path / name / "1" / "tritongen"
        artifacts.mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n')
        (artifacts / "manifest.json").write_text(json.dumps({"manifest_schema": 1, "files": {}, **manifest}))
        for file in files:
            (artifacts / file).write_bytes(b"")

    for ensemble, end_to_end, precision in (("custom", False, "fp32"), ("txt", True, "fp32"), ("txt8", True, "int8")):
        made(
            ensemble,
            ("end_to_end.json",) if end_to_end else (),
            kind="ensemble",
            model={"spec": {"precision": precision, "atol": 1e-5, "rtol": 1e-3}},  # infer --check's tolerances
        )
        made(f"{ensemble}_model", ("samples.npz", "reference_outputs.npz"), kind="model", spec=TOLERANCES)
        made(f"{ensemble}_preprocess", (), kind="python")
        made(f"{ensemble}_postprocess", (), kind="python")

    def named(*prefixes: str) -> str:
        models = tuple(sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(prefixes)))
        lines = _next_steps(models, "h:1", tmp_path, built=set(models))
        assert lines[2].split()[:3] == ["tritongen", "perf", lines[1].split()[2]]  # perf names the same model
        return " ".join(lines[1].split("#")[0].split()[2:3] + lines[1].split("#")[0].split()[-1:])

    assert named("custom", "txt") == "txt --check"  # the ensemble that checks, before custom (alphabetical first)
    assert named("custom") == "custom_model --check"  # no ensemble checks: its model step does
    assert named("txt8") == "txt8_model --check"  # INT8 model step: the FP32 end-to-end reference does not apply
    # a manifest without the parity tolerances infer --check holds the answers to (edited by hand): not named
    from tritongen.end_to_end import checkable

    made("plain", ("samples.npz", "reference_outputs.npz"), kind="model")
    assert checkable(tmp_path / "txt_model") and not checkable(tmp_path / "plain")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["build"], "Missing argument 'MODEL'"),
        (["serve", "repo", "--model-control", "foo"], "'foo' is not one of"),
        (["build", "m.pt", "--max-batch-size", "x"], "'x' is not a valid integer"),
        (["nosuch"], "No such command 'nosuch'"),
        # click's multi-line list of choices reads as one line, without escaped line breaks or tabs
        (
            ["deploy", "repo", "--out", "x"],
            "error: Missing option '--to'. Choose from: docker, kserve, kubernetes: see 'tritongen deploy --help'",
        ),
        # an option without its value: click gives no context, the command is read off the command line
        (["perf", "m", "--report"], "error: Option '--report' requires an argument: see 'tritongen perf --help'"),
        (["--debug", "build", "m.pt", "--name"], "requires an argument: see 'tritongen build --help'"),
    ],
)
def test_a_usage_mistake_is_one_error_line_too(argv, words, capsys):
    from tritongen.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert "--help'" in err and "Usage:" not in err


@pytest.mark.parametrize("argv", [["build", "--debug", "x.pt"], ["build", "x.pt", "--debug"]])
def test_debug_after_the_command_says_it_goes_before_it(argv, capsys):
    from tritongen.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err == (
        "error: No such option '--debug': --debug goes before the command: tritongen --debug build ...\n"
    ), err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["infer", "m", "--protocol", "HTTP", "--url", "grpc://127.0.0.1:1"], "--protocol is http:"),
        (["perf", "m", "--protocol", "gRPC", "--url", "http://127.0.0.1:1"], "--protocol is grpc:"),
        (["rollback", "repo", "m", "--protocol", "Http", "--url", "grpc://127.0.0.1:1"], "--protocol is http:"),
    ],
)
def test_protocol_is_taken_in_any_case_and_read_in_lower_case(argv, said, capsys):
    """--protocol HTTP is http (the contradicting URL scheme shows what the command went on with)."""
    from tritongen.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert said in err and "is not one of" not in err, err


def test_tritongen_alone_prints_its_help(capsys):
    from tritongen.cli import main

    with pytest.raises(SystemExit) as exc:
        main([])
    out = capsys.readouterr()
    assert exc.value.code == 0 and "Usage: tritongen" in out.out + out.err and "error:" not in out.out + out.err


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "{m}"],
        ["verify", "{m}"],
        ["serve", "{m}"],
        ["sign", "{m}", "--private-key", "{key}"],
        ["deploy", "{m}", "--to", "docker", "--out", "{out}"],
        ["infer", "double", "--repo", "{m}"],
        ["rollout", "{m}", "double", "--to-version", "2"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_model_folder_given_for_its_repository_is_named_as_such(tiny_repository, tmp_path, argv, capsys):
    """Read as a repository, a model folder's version folders looked like models without a config: verify advised
    "remove 1/", validate "write .../1/config.pbtxt". Each command says what was passed and what to pass."""
    from tritongen.cli import main

    model = tiny_repository / "double"
    given = [a.format(m=model, key=tmp_path / "k.pem", out=tmp_path / "out") for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(given)
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("error: ") == 1 and "Traceback" not in err, err
    assert f"error: {model} is a model folder (it holds config.pbtxt), not a model repository" in err, err
    assert f"pass the repository that holds it: {tiny_repository.resolve()}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["infer", "perf"])
def test_a_model_folder_names_the_model_and_its_repository(tiny_repository, tmp_path, command, capsys):
    """`perf REPO/NAME` was read as a model named 'REPO/NAME' (infer took the folder): both take it now, and a
    --repo naming another repository is refused before anything is sent."""
    from tritongen.cli import main

    model = tiny_repository / "double"
    with pytest.raises(SystemExit) as exc:
        main([command, str(model), "--repo", str(tmp_path), "--url", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and f"is a model folder of {tiny_repository}, but --repo names {tmp_path}" in err, err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["serve", ".", "--timeout-s", "nan"], "error: serve option --timeout-s nan is not a finite number"),
        (["serve", ".", "--timeout-s", "-1"], "error: serve option --timeout-s -1.0 is not above 0"),
        (["rollout", ".", "m", "--to-version", "2", "--timeout", "nan"], "error: rollout option --timeout nan is not"),
    ],
)
def test_a_specs_own_check_names_the_flag_typed_not_the_api_keyword(argv, line):
    """serve --timeout-s nan said "serve option ready_timeout_s=nan": a keyword of the Python API, no flag."""
    from tests.test_bad_input import _run

    code, _, err = _run(argv)
    assert code == 1 and err.startswith(line), err
    import tritongen
    from tritongen.errors import TritongenError

    with pytest.raises(TritongenError, match=r"serve option ready_timeout_s=nan is not a finite number"):
        tritongen.serve(".", ready_timeout_s=float("nan"))  # from Python: the keyword
