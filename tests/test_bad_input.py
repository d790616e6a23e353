"""Issue 6's bad-input corpus, through the real CLI entry point (``tritongen.cli.main``).

Every case must end with exactly one ``error: <problem>: <fix>`` line on stderr, a non-zero exit code, no
traceback, no partial output, and earlier builds untouched. Cases that need a server get a real one.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.cli import main
from tritongen.manifest import sha256_file

ROOT = Path(__file__).resolve().parent.parent
CONV = ["--input", "x:FP32:3,32,32", "--max-batch-size", "4"]


class RunsCode:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class World:
    """Files the cases point at, made once per module."""

    root: Path
    conv: Path = field(init=False)
    conv_state: Path = field(init=False)
    repo: Path = field(init=False)  # holds a good build of 'conv' that no case may change

    def __post_init__(self) -> None:
        self.conv = factories.save_model(
            factories.make_small_conv(), self.root / "conv.pt", "torchscript-trace", factories.small_conv_inputs()
        )
        self.conv_state = factories.save_model(factories.make_small_conv(), self.root / "conv_state.pt", "state_dict")
        self.repo = self.root / "repo"
        assert _run(["build", str(self.conv), "--name", "conv", "--repo", str(self.repo), *CONV])[0] == 0

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path


def _run(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes/readme.txt", "not TorchScript")
    return path


def _truncated(world: World) -> Path:
    data = world.conv.read_bytes()
    return world.file("truncated.pt", data[: len(data) // 2])


def _evil(world: World) -> Path:
    path = world.root / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump(RunsCode(str(world.root / "PWNED")), fh)
    return path


def _nan_model(world: World) -> Path:
    class MakesNaN(torch.nn.Module):
        def forward(self, x):
            return torch.log(x - 1e9)

    return factories.save_model(MakesNaN(), world.root / "nan.pt", "torchscript-trace", (torch.randn(2, 4),))


def _npz(world: World, name: str, **arrays) -> Path:
    path = world.root / name
    np.savez(path, **arrays)
    return path


def _versionless_repo(world: World) -> Path:
    """A repository whose model 'conv' lost its version folder (config.pbtxt only)."""
    repo = world.root / "versionless"
    (repo / "conv").mkdir(parents=True, exist_ok=True)
    (repo / "conv" / "config.pbtxt").write_bytes((world.repo / "conv" / "config.pbtxt").read_bytes())
    return repo


def _perf_nowhere(world: World) -> list[str]:
    """perf of the good build against a port no Triton answers on."""
    return ["perf", "conv", "--repo", str(world.repo), "--url", "127.0.0.1:9", "--duration-s", "1"]


# (case id, argv builder, words the error line must contain)
CASES: list[tuple[str, Callable[[World], list[str]], tuple[str, ...]]] = [
    ("missing model file", lambda w: ["build", str(w.root / "nope.pt"), *CONV], ("does not exist",)),
    ("empty model file", lambda w: ["build", str(w.file("empty.pt", b"")), *CONV], ("empty",)),
    ("truncated TorchScript", lambda w: ["build", str(_truncated(w)), *CONV], ("truncated",)),
    (
        "random bytes",
        lambda w: ["build", str(w.file("random.pt", np.random.default_rng(0).bytes(4096))), *CONV],
        ("TorchScript",),
    ),
    ("zip that is not TorchScript", lambda w: ["build", str(_zip(w.root / "z.pt")), *CONV], ("zip archive",)),
    ("text file", lambda w: ["build", str(w.file("model.txt", b"hello\n" * 20)), *CONV], ("text",)),
    ("state_dict without factory", lambda w: ["build", str(w.conv_state), *CONV], ("state_dict", "--model-factory")),
    (
        "state_dict keys do not match factory",
        lambda w: ["build", str(w.conv_state), *CONV, "--model-factory", "tests.factories:make_two_in_two_out"],
        ("unexpected",),
    ),
    (
        "factory not importable",
        lambda w: ["build", str(w.conv_state), *CONV, "--model-factory", "no_such_pkg.mod:make"],
        ("no_such_pkg",),
    ),
    ("pickle that would run code", lambda w: ["build", str(_evil(w)), *CONV], ("--allow-pickle",)),
    ("wrong input dtype", lambda w: ["build", str(w.conv), "--input", "x:INT64:3,32,32"], ("model failed on inputs",)),
    ("wrong input rank", lambda w: ["build", str(w.conv), "--input", "x:FP32:3,32"], ("model failed on inputs",)),
    (
        "too many inputs",
        lambda w: ["build", str(w.conv), "--input", "x:FP32:3,32,32", "--input", "y:FP32:3"],
        ("model failed on inputs",),
    ),
    (
        "zero dim",
        lambda w: ["build", str(w.conv), "--input", "x:FP32:3,0,32"],
        ("tensor 'x' has a dimension of size 0 (dims 3,0,32)",),
    ),
    (
        "negative dim",
        lambda w: ["build", str(w.conv), "--input", "x:FP32:3,-4,32"],
        ("a dimension of size -4 (dims 3,-4,32)",),
    ),
    ("malformed --input", lambda w: ["build", str(w.conv), "--input", "x=FP32"], ("NAME:DTYPE:DIMS",)),
    ("unknown dtype", lambda w: ["build", str(w.conv), "--input", "x:FLOAT128:3"], ("unknown data type",)),
    (
        "negative max batch",
        lambda w: ["build", str(w.conv), "--input", "x:FP32:3,32,32", "--max-batch-size", "-2"],
        ("negative",),
    ),
    (
        "outputs contain NaN",
        lambda w: ["build", str(_nan_model(w)), "--input", "x:FP32:4"],
        ("PyTorch's output 'output' holds NaN", "fix the model"),
    ),
    (
        "export of data-dependent control flow",
        lambda w: ["build", str(_data_dependent_pickle(w)), "--input", "x:FP32:4", "--allow-pickle"],
        ("ONNX export failed",),
    ),
    (
        "name with path separator",
        lambda w: ["build", str(w.conv), *CONV, "--name", "a/b"],
        ("not a valid folder name",),
    ),
    ("name with ..", lambda w: ["build", str(w.conv), *CONV, "--name", ".."], ("not a valid folder name",)),
    (
        "existing model without --force",
        lambda w: ["build", str(w.conv), *CONV, "--name", "conv", "--repo", str(w.repo)],
        ("already exists", "--force"),
    ),
    (
        "--force with --new-version",
        lambda w: ["build", str(w.conv), *CONV, "--force", "--new-version"],
        ("--force and --new-version",),
    ),
    (
        "repository folder is a file",
        lambda w: ["build", str(w.conv), *CONV, "--repo", str(w.file("afile", b"x"))],
        ("is a file",),
    ),
    (
        "repository on a read-only file system",
        lambda w: ["build", str(w.conv), *CONV, "--repo", "/proc/tritongen-repo"],
        ("repository folder",),
    ),
    (
        "spec file with bad YAML",
        lambda w: ["build", str(w.conv), "--spec", str(w.file("bad.yaml", b"inputs: [\n"))],
        ("not valid YAML",),
    ),
    (
        "sample file that is not npz",
        lambda w: ["build", str(w.conv), *CONV, "--sample-inputs", str(w.file("s.npz", b"garbage"))],
        ("cannot read sample file",),
    ),
    (
        "sample file with pickled objects",
        lambda w: [
            "build",
            str(w.conv),
            *CONV,
            "--sample-inputs",
            str(_npz(w, "obj.npz", x=np.array([{"a": 1}], dtype=object))),
        ],
        ("pickled objects",),
    ),
    (
        "sample dtype differs from --input",
        lambda w: ["build", str(w.conv), *CONV, "--sample-inputs", str(_npz(w, "f64.npz", x=np.zeros((2, 3, 32, 32))))],
        ("float64",),
    ),
    (
        "max batch size smaller than the sample batch",
        lambda w: [
            "build",
            str(w.conv),
            *CONV,
            "--max-batch-size",
            "2",
            "--sample-inputs",
            str(_npz(w, "rows5.npz", x=np.zeros((5, 3, 32, 32), np.float32))),
        ],
        ("batch of 5", "--max-batch-size 5"),
    ),
    (
        "samples inferred from a 0-d array (a batched model)",  # was a traceback: IndexError in sample_set_from_spec
        lambda w: ["build", str(w.conv), "--sample-inputs", str(_npz(w, "zero_d.npz", x=np.float32(3.0)))],
        ("input 'x' is a single value (a 0-d array)", "numpy.array([value])"),
    ),
    (
        "sample without the declared input",
        lambda w: [
            "build",
            str(w.conv),
            *CONV,
            "--sample-inputs",
            str(_npz(w, "wrongname.npz", image=np.zeros((2, 3, 32, 32), np.float32))),
        ],
        ("no array for input 'x'",),
    ),
    (
        "samples of another model's inputs",
        lambda w: [
            "build",
            str(w.conv),
            "--sample-inputs",
            str(_npz(w, "other_model.npz", input_ids=np.ones((2, 8), np.int64), mask=np.ones((2, 8), np.int64))),
        ],
        ("model failed on inputs", "check the arrays of other_model.npz", "--sample-inputs must hold this model's"),
    ),
    ("validate: config syntax error", lambda w: ["validate", str(_syntax_error_repo(w))], ("problem",)),
    ("validate: repository missing", lambda w: ["validate", str(w.root / "no-repo")], ("does not exist",)),
    ("validate: repository is a file", lambda w: ["validate", str(w.file("repofile", b"x"))], ("not a folder",)),
    ("serve: invalid repository", lambda w: ["serve", str(_syntax_error_repo(w))], ("problem",)),
    ("serve: repository missing", lambda w: ["serve", str(w.root / "no-repo")], ("does not exist",)),
    ("serve: no such port", lambda w: ["serve", str(w.repo), "--http-port", "99999"], ("is not a port number",)),
    (
        "serve: bogus --server-bin",
        lambda w: ["serve", str(w.repo), "--server-bin", str(w.root / "no-tritonserver")],
        ("no-tritonserver",),
    ),
    (
        "infer: no server listening",
        lambda w: ["infer", "conv", "--repo", str(w.repo), "--url", "127.0.0.1:9"],
        ("127.0.0.1:9",),
    ),
    (
        "infer: an http:// --url is tried over HTTP",
        lambda w: ["infer", "conv", "--repo", str(w.repo), "--url", "http://127.0.0.1:9"],
        ("no Triton server answers at 127.0.0.1:9 over http",),
    ),
    (
        "infer: --url scheme that contradicts --protocol",
        lambda w: ["infer", "conv", "--repo", str(w.repo), "--url", "http://127.0.0.1:9", "--protocol", "grpc"],
        ("--url http://127.0.0.1:9 asks for HTTP but --protocol is grpc", "pass --protocol http"),
    ),
    (
        "perf: --url scheme that contradicts --protocol",
        lambda w: ["perf", "conv", "--repo", str(w.repo), "--url", "grpc://127.0.0.1:9", "--protocol", "http"],
        ("--url grpc://127.0.0.1:9 asks for gRPC but --protocol is http", "pass --protocol grpc"),
    ),
    (
        "tune: --url scheme that contradicts --protocol",
        lambda w: [
            "tune",
            str(w.repo / "conv"),
            "--max-p99-ms",
            "10",
            "--url",
            "http://127.0.0.1:9",
            "--protocol",
            "grpc",
        ],
        ("asks for HTTP but --protocol is grpc",),
    ),
    (
        "infer: unknown model's samples",
        lambda w: ["infer", "ghost", "--repo", str(w.repo)],
        ("no build of model 'ghost'",),
    ),
    (
        "infer: a model name with a typo",
        lambda w: ["infer", "cnov", "--repo", str(w.repo)],
        ("no build of model 'cnov'", "did you mean 'conv'? pass --repo"),
    ),
    (
        "infer: a model folder without its version folder",
        lambda w: ["infer", "conv", "--repo", str(_versionless_repo(w))],
        ("no build of model 'conv'", "no version folder such as 1/", "rebuild it with tritongen build --force"),
    ),
    (
        "infer: input file missing",
        lambda w: ["infer", "conv", "--input-file", str(w.root / "none.npz")],
        ("does not exist",),
    ),
    (
        "perf: no server listening",
        lambda w: ["perf", "conv", "--repo", str(w.repo), "--url", "127.0.0.1:9", "--duration-s", "1"],
        ("no Triton server answers",),
    ),
    ("perf: zero concurrency", lambda w: ["perf", "conv", "--concurrency", "0"], ("concurrency 0",)),
    (
        "perf: perf_analyzer option tritongen sets",
        lambda w: ["perf", "conv", "--engine", "perf_analyzer", "--perf-analyzer-args", "-u 10.0.0.9:8001"],
        ("sets '-u', which tritongen sets itself",),
    ),
    ("perf: --compare without --report", lambda w: ["perf", "--compare", str(w.file("a.json", b"{}"))], ("--report",)),
    (
        "perf: --compare of a file that is not a result",
        lambda w: ["perf", "--compare", str(w.file("b.json", b"[1, 2")), "--report", str(w.root / "cmp")],
        ("b.json",),
    ),
    (
        "perf: --compare of a result with a figure that is text",
        lambda w: [
            "perf",
            "--compare",
            str(_result(w, "t.json", throughput_rps="fast")),
            "--report",
            str(w.root / "cmp"),
        ],
        ("t.json is malformed", "throughput_rps"),
    ),
    (
        "perf: --compare of a result with a point lacking its mode",
        lambda w: ["perf", "--compare", str(_result(w, "m.json", mode=None)), "--report", str(w.root / "cmp")],
        ("m.json lacks 'mode'",),
    ),
    # --report is checked before any load: these name no server that answers (127.0.0.1:9), and still get the
    # report's error, not that one
    (
        "perf: --report that is a file",
        lambda w: [*_perf_nowhere(w), "--report", str(w.file("notes.md", b"# notes\n"))],
        ("the report path", "notes.md is a file, not a folder", "pass --report with a folder path"),
    ),
    (
        "perf: --report under a file",
        lambda w: [*_perf_nowhere(w), "--report", str(w.file("notes2.md", b"# notes\n") / "out")],
        ("cannot be created (", "notes2.md is a file, not a folder)"),
    ),
    (
        "perf: --report where no folder can be created",
        lambda w: [*_perf_nowhere(w), "--report", "/proc/tritongen-report"],
        ("the report folder /proc/tritongen-report cannot be created in /proc", "folder you can write to"),
    ),
    (
        "perf: --compare into a --report that is a file",
        lambda w: ["perf", "--compare", str(_result(w, "ok.json")), "--report", str(w.file("notes3.md", b"x"))],
        ("notes3.md is a file, not a folder",),
    ),
    ("verify: a model file swapped after the build", lambda w: ["verify", str(_swapped_repo(w))], ("model.onnx",)),
    (
        "tune: model folder missing",
        lambda w: ["tune", str(w.root / "no-repo" / "m"), "--max-p99-ms", "10"],
        ("does not exist",),
    ),
    ("verify: repository missing", lambda w: ["verify", str(w.root / "nope_repo")], ("nope_repo does not exist",)),
    (
        "sign: repository missing",
        lambda w: ["sign", str(w.root / "nope_repo"), "--private-key", str(w.root / "k.pem")],
        ("nope_repo does not exist",),
    ),
]


def _result(world: World, name: str, **point) -> Path:
    """A results.json as perf writes it, one point's fields replaced (None: removed)."""
    import json
    from dataclasses import replace

    from tests.test_perf_units import _point
    from tritongen.perf.results import PerfRun, json_from_run

    run = PerfRun(
        model="m",
        url="127.0.0.1:8001",
        protocol="grpc",
        engine="builtin",
        points=(replace(_point(4.0), server_cpu_us_per_request=150.0, server_cpu_cores=0.9),),
    )
    data = json.loads(json_from_run(run))
    for key, value in point.items():
        if value is None:
            del data["points"][0][key]
        else:
            data["points"][0][key] = value
    return world.file(name, json.dumps(data).encode())


def _swapped_repo(world: World) -> Path:
    """A copy of the good build whose model.onnx was replaced by another file of the same size."""
    import shutil

    repo = world.root / "swapped_repo"
    if not repo.exists():
        shutil.copytree(world.repo, repo)
        onnx = repo / "conv" / "1" / "model.onnx"
        onnx.write_bytes(bytes(reversed(onnx.read_bytes())))
    return repo


# Cases that need a running server (the session's tiny one): (case id, argv builder(world, server), words).
SERVER_CASES: list[tuple[str, Callable[..., list[str]], tuple[str, ...]]] = [
    (
        "perf: --report that is a file, with a server that would answer",  # refused before the load, not after it
        lambda w, s: [
            "perf",
            "double",
            "--url",
            s.grpc_url,
            "--concurrency",
            "1",
            "--duration-s",
            "0.3",
            "--warmup-s",
            "0",
            "--input-data",
            str(_npz(w, "perf_ok.npz", X=np.zeros((2, 4), np.float32))),
            "--report",
            str(w.file("README.md", b"# notes\n")),
        ],
        ("README.md is a file, not a folder", "pass --report with a folder path"),
    ),
    (
        "perf: unknown model",
        lambda w, s: ["perf", "ghost", "--url", s.grpc_url, "--duration-s", "1"],
        ("no model 'ghost'",),
    ),
    (
        "perf: input data with the wrong input name",
        lambda w, s: [
            "perf",
            "double",
            "--url",
            s.grpc_url,
            "--input-data",
            str(_npz(w, "perf_name.npz", Z=np.zeros((2, 4), np.float32))),
        ],
        ("do not match model 'double'",),
    ),
    (
        "perf: input data with the wrong shape",
        lambda w, s: [
            "perf",
            "double",
            "--url",
            s.grpc_url,
            "--input-data",
            str(_npz(w, "perf_shape.npz", X=np.zeros((2, 5), np.float32))),
        ],
        ("shape",),
    ),
    (
        "infer: unknown model",
        lambda w, s: [
            "infer",
            "ghost",
            "--url",
            s.grpc_url,
            "--input-file",
            str(_npz(w, "inf_ok.npz", X=np.zeros((2, 4), np.float32))),
        ],
        ("ghost",),
    ),
    (
        "infer: input with the wrong shape",
        lambda w, s: [
            "infer",
            "double",
            "--url",
            s.grpc_url,
            "--input-file",
            str(_npz(w, "inf_shape.npz", X=np.zeros((2, 5), np.float32))),
        ],
        ("X",),
    ),
    (
        "infer: input with the wrong dtype",
        lambda w, s: [
            "infer",
            "double",
            "--url",
            s.grpc_url,
            "--input-file",
            str(_npz(w, "inf_dtype.npz", X=np.zeros((2, 4), np.float64))),
        ],
        ("X",),
    ),
    (
        "tune: server without explicit model control",
        lambda w, s: [
            "tune",
            str(s.spec.repo / "double"),
            "--url",
            s.grpc_url,
            "--max-p99-ms",
            "10",
            "--duration-s",
            "0.5",
            "--input-data",
            str(_npz(w, "tune_ok.npz", X=np.zeros((2, 4), np.float32))),
        ],
        ("explicit",),
    ),
]


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on values: the exporter cannot capture it
            return x * 2
        return x - 1


def _data_dependent_pickle(world: World) -> Path:
    return factories.save_model(DataDependent(), world.root / "dd_module.pt", "pickled_module")


def _syntax_error_repo(world: World) -> Path:
    repo = world.root / "broken_repo"
    (repo / "m" / "1").mkdir(parents=True, exist_ok=True)
    (repo / "m" / "1" / "model.py").write_text("")
    (repo / "m" / "config.pbtxt").write_text(
        'name: "m"\nbackend: "python"\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] \n'
    )
    return repo


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("bad_input"))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_one_clean_line(case: str, code: int, out: str, err: str, words: tuple[str, ...]) -> None:
    assert code != 0, f"{case}: exit code 0\n{out}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    line = errors[0]
    assert ": " in line[len("error: ") :], f"no fix in: {line}"
    for word in words:
        assert word in line, f"{case}: {word!r} not in {line!r}"


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clean_line(world, tmp_path, monkeypatch, case, argv, words):
    monkeypatch.chdir(tmp_path)  # the default repository folder is ./model_repository
    before = _snapshot(world.repo)
    code, out, err = _run(argv(world))
    _assert_one_clean_line(case, code, out, err, words)
    assert not (tmp_path / "model_repository").exists(), "partial repository left behind"
    assert _snapshot(world.repo) == before, "an earlier build was changed"
    assert not [p for p in world.repo.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert not (world.root / "PWNED").exists(), "a pickle was executed"


@pytest.mark.server
@pytest.mark.parametrize("case, argv, words", SERVER_CASES, ids=[c[0] for c in SERVER_CASES])
def test_bad_use_of_a_running_server_gets_one_clean_line(world, tiny_server, tmp_path, monkeypatch, case, argv, words):
    monkeypatch.chdir(tmp_path)
    repo = tiny_server.spec.repo
    before = _snapshot(repo)
    code, out, err = _run(argv(world, tiny_server))
    _assert_one_clean_line(case, code, out, err, words)
    assert "config 1:" not in out + err, "tune announced a config it never loaded"
    assert _snapshot(repo) == before, "the served repository was changed"
    assert tiny_server.is_running()
    assert not list(tmp_path.iterdir()), "output left behind"


def test_corpus_is_large_enough():
    assert len(CASES) + len(SERVER_CASES) >= 30
    # Cases of commands other than build are named "<command>: ..."; every command has some.
    commands = {case.split(":")[0] if ":" in case else "build" for case, _, _ in CASES + SERVER_CASES}
    assert commands >= {"build", "validate", "serve", "infer", "perf", "verify", "tune"}


def test_debug_flag_shows_the_traceback(world):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "tritongen", "--debug", "build", str(world.root / "nope.pt"), *CONV],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "TritongenError" in proc.stderr


@pytest.mark.parametrize("extra", [[], ["--http-port", "99999"]], ids=["missing repository", "no such port"])
def test_serve_refuses_bad_arguments_before_it_says_it_is_starting(tmp_path, capsys, extra):
    """serve printed "checking ... and starting tritonserver on a checked copy of it ..." before refusing a
    repository that is not there or a port number that is no port."""
    from tests.conftest import run_cli

    code, out, err = run_cli(["serve", str(tmp_path / "no-repo"), *extra], capsys)
    assert code == 1 and err.strip().startswith("error: ") and "checking" not in err, err
