"""The public Python API: what `import tritongen` offers, building an in-memory module, and the README example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tritongen
from tritongen.errors import TritongenError

ROOT = Path(__file__).resolve().parents[1]


def test_api_is_documented_and_import_stays_light():
    for name in tritongen.__all__:
        obj = getattr(tritongen, name)
        assert obj.__doc__ and len(obj.__doc__) > 40, name
    assert callable(tritongen.build) and callable(tritongen.perf) and callable(tritongen.deploy)
    code = (
        "import sys, tritongen, tritongen.build, tritongen.perf.spec; "
        "assert callable(tritongen.build) and callable(tritongen.perf), 'a submodule replaced an API function'; "
        "heavy = [m for m in ('torch', 'tritonclient', 'onnx') if m in sys.modules]; "
        "assert not heavy, heavy; help(tritongen.build)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "in-memory" in out.stdout and "example_inputs" in out.stdout


def test_build_from_in_memory_module(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    repo = tmp_path / "repo"
    result = tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="net", repo=repo)
    assert result.parity.ok
    assert [t.name for t in result.spec.inputs] == ["input_0"] and result.spec.inputs[0].dims == (4,)
    assert result.model_dir == repo / "net"
    import json

    manifest = json.loads(Path(result.manifest_path).read_text())  # no temporary path, gone after the build
    assert manifest["source"]["path"] == manifest["spec"]["model_path"] == "<in-memory Sequential>"
    assert manifest["spec"]["sample_inputs"] == "<example_inputs>"
    assert tritongen.validate(repo).ok
    tritongen.verify(repo)
    with pytest.raises(TritongenError, match="example_inputs"):
        tritongen.build(net, name="again", repo=repo)
    # every result prints as the CLI prints it, by one name (build's text was the CLI's own code)
    assert result.text().splitlines()[0].startswith(f"built {repo / 'net'} (version 1, local target, ")
    assert f"  input  {'input_0':<24} FP32   [4]" in result.text().splitlines()
    assert tritongen.validate(repo).text() == tritongen.validate(repo).summary()
    assert tritongen.verify(repo).text().startswith("6 files match their manifests in ")


def test_every_result_the_api_returns_prints_with_text():
    """The newcomer's note: one result printed with text(), another with summary(), a third with table()."""
    from tritongen.build import BuildResult
    from tritongen.deploy.docker import DockerBundle, DockerSteps
    from tritongen.deploy.k8s_bundle import DeployBundle
    from tritongen.deploy.rollout import RolloutResult
    from tritongen.engine import EngineResult
    from tritongen.ensemble import EnsembleBuildResult
    from tritongen.infer import InferResult
    from tritongen.lint import LintReport
    from tritongen.perf.results import PerfRun
    from tritongen.perf.tune_spec import TuneResult
    from tritongen.validate import ValidationReport
    from tritongen.verify import VerifyReport

    kinds = (BuildResult, EnsembleBuildResult, ValidationReport, VerifyReport, DockerSteps, InferResult, PerfRun)
    kinds += (TuneResult, EngineResult, LintReport, DockerBundle, DeployBundle, RolloutResult)
    assert [k.__name__ for k in kinds if not callable(getattr(k, "text", None))] == []
    plan = EngineResult(Path("m/1/model.plan"), "10.3.0", "8.9", 61.04)
    assert plan.text() == "built m/1/model.plan (TensorRT 10.3.0, compute capability 8.9) in 61.0s"


def test_build_refuses_what_it_cannot_build(tmp_path):
    with pytest.raises(TritongenError, match="cannot build a value of type dict"):
        tritongen.build({"not": "a model"}, example_inputs={"x": [1.0]}, repo=tmp_path)
    with pytest.raises(TritongenError, match="does not exist"):
        tritongen.build(tmp_path / "missing.pt", inputs=["x:FP32:4"], repo=tmp_path)


def test_serve_refuses_an_unverified_repository_before_booting(tmp_path):
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)  # written by hand: no manifest
    with pytest.raises(TritongenError, match="manifest"):
        with tritongen.serve(repo, server_bin=tmp_path / "no-such-tritonserver"):
            pytest.fail("served an unverified repository")


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


@pytest.mark.server
@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, server_install, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "parity ok: True" in out and "MATCH" in out and "MISMATCH" not in out
    assert (tmp_path / "model_repository" / "tiny" / "config.pbtxt").is_file()


def test_validate_checks_plans_against_the_triton_the_cli_assumes(tmp_path):
    """One default: ``tritongen.validate(repo)`` and ``tritongen validate REPO`` both check the plans recorded in
    the manifests against DEFAULT_TRITON_VERSION's TensorRT (the API skipped the check); None skips it."""
    import inspect
    import json

    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
    from tests.test_bad_input import _run
    from tritongen.cli import cli
    from tritongen.plan_compat import DEFAULT_TRITON_VERSION

    repo = tmp_path / "repo"
    folder = write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    (folder / "1" / "tritongen").mkdir()
    engines = {"8.9": {"plan": "model.plan", "tensorrt_version": "8.6.1", "compute_capability": "8.9"}}
    (folder / "1" / "tritongen" / "manifest.json").write_text(json.dumps({"engines": engines}))
    with pytest.raises(TritongenError) as err:
        tritongen.validate(repo)
    assert "TensorRT 8.6.1" in err.value.details and f"Triton {DEFAULT_TRITON_VERSION}" in err.value.details
    code, _, stderr = _run(["validate", str(repo)])
    assert code == 1 and "1 problem in model repository" in stderr
    assert tritongen.validate(repo, triton_version=None).ok  # asked not to check plans
    cli_default = next(p.default for p in cli.commands["validate"].params if p.name == "triton_version")
    api_default = inspect.signature(tritongen.validate).parameters["triton_version"].default
    assert cli_default == api_default == DEFAULT_TRITON_VERSION


def _recorded_build_specs(monkeypatch) -> list:
    """The BuildSpecs that build() resolves from here on, each recorded and then the build stopped (the spec is
    what the calling test reads)."""
    import functools

    from tritongen import spec as spec_module

    real = spec_module.build_spec_from_options
    made: list = []

    @functools.wraps(real)
    def recording(model, **options):
        made.append(real(model, **options))
        raise TritongenError("stop here", "the spec is what this test reads")

    monkeypatch.setattr(spec_module, "build_spec_from_options", recording)
    return made


def test_build_takes_one_string_where_a_list_goes_as_one_item(tmp_path, monkeypatch):
    """build(outputs="logits") named six outputs, one per letter; preferred_batch_sizes=4 was a raw TypeError:
    build's options are checked against build_spec_from_options' annotations first, as the specs' are."""
    made = _recorded_build_specs(monkeypatch)
    model = tmp_path / "m.pt"
    model.write_bytes(b"placeholder")
    with pytest.raises(TritongenError, match="stop here"):
        tritongen.build(
            model,
            inputs="x:FP32:4",
            outputs="y",
            preferred_batch_sizes=4,
            max_batch_size=4,
            consts={"sr": 16000},
            max_abs_error="y=0.1",
            precision="fp16",  # the guard's options are refused for fp32
            repo=tmp_path / "repo",
        )
    (spec,) = made
    assert [i.name for i in spec.inputs] == ["x"] and spec.output_names == ("y",)
    assert spec.preferred_batch_sizes == (4,) and spec.consts == (("sr", 16000),)
    assert spec.max_abs_error == (("y", 0.1),)
    with pytest.raises(TritongenError, match="build option preferred_batch_sizes item '4' is a str"):
        tritongen.build(model, preferred_batch_sizes=["4"], repo=tmp_path / "repo")


def test_build_keywords_take_the_spec_files_python_forms(tmp_path):
    """consts, states and max_abs_error take a mapping or pairs (as the YAML spec file writes them) as well as the
    CLI's strings, and all forms make the same spec; a wrong entry is a TritongenError naming the form."""
    from tritongen.sequence import StatePair
    from tritongen.spec import build_spec_from_options

    model = tmp_path / "m.pt"
    model.write_bytes(b"placeholder")  # never loaded: the spec only
    common = {"inputs": ["x:FP32:4", "h:FP32:8"], "outputs": ["y", "h_next"], "max_batch_size": 4, "precision": "fp16"}

    def spec(**kw):
        return build_spec_from_options(model, repo=tmp_path / "repo", **common, **kw)

    cli_form = spec(max_abs_error=["y=0.1"], consts=["sr=16000", "fast=true"], states=["h:h_next"])
    for py_form in (
        {"max_abs_error": {"y": 0.1}, "consts": {"sr": 16000, "fast": True}, "states": {"h": "h_next"}},
        {"max_abs_error": [("y", 0.1)], "consts": [("sr", 16000), ("fast", True)], "states": [("h", "h_next")]},
        {"max_abs_error": [["y", 0.1]], "consts": [["sr", 16000], "fast=true"], "states": [StatePair("h", "h_next")]},
    ):
        made = spec(**py_form)
        assert made.max_abs_error == cli_form.max_abs_error == (("y", 0.1),), py_form
        assert made.consts == cli_form.consts == (("sr", 16000), ("fast", True)), py_form
        assert made.states == cli_form.states == (StatePair("h", "h_next"),), py_form
    for bad, words in (
        ({"max_abs_error": {"y": "0.1"}}, "--max-abs-error ('y', '0.1') is not OUTPUT=VALUE"),
        ({"max_abs_error": {"y": -1.0}}, "--max-abs-error y=-1.0 is not a positive number"),
        ({"max_abs_error": [("y",)]}, "is not OUTPUT=VALUE"),
        ({"consts": {"sr": "16000"}}, "the value is not an int, a finite float or a bool"),
        ({"consts": {"sr": float("nan")}}, "the value is not an int, a finite float or a bool"),
        ({"consts": {"not a name": 1}}, "is not an argument name"),
        ({"consts": [("sr", 1), ("sr", 2)]}, "--const sr is given twice"),
        ({"consts": [3]}, "--const 3 is not NAME=VALUE"),
        ({"states": [("h", "h_next", "x")]}, "is not INPUT:OUTPUT"),
        ({"states": [("h", 3)]}, "is not INPUT:OUTPUT"),
        ({"states": {"h": "h"}}, "state tensor 'h' is named twice"),
    ):
        with pytest.raises(TritongenError) as err:
            spec(**bad)
        assert words in str(err.value), (bad, str(err.value))


def test_build_of_an_in_memory_module_hands_it_back_in_its_mode(tmp_path):
    """build() runs the module in eval mode and puts every submodule back as it came (train, or a mix), after a
    build and after a failed one; max_abs_error as a mapping reaches the build."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5))
    net.train()
    net[1].eval()  # a mix: the caller's choice, kept
    before = [m.training for m in net.modules()]
    assert before == [True, True, False]
    result = tritongen.build(
        net,
        example_inputs=[torch.randn(2, 4)],
        name="net",
        repo=tmp_path / "repo",
        max_abs_error={"output": 1.0},
        precision="fp16",
    )
    assert result.parity.ok and result.spec.max_abs_error == (("output", 1.0),)
    # the guard's figures on the result, as the manifest records them (the API caller had to read the manifest)
    assert result.precision == json.loads(result.manifest_path.read_text())["precision"]
    assert result.precision["precision"] == "fp16" and result.precision["accuracy"]["cosine_min"] > 0.99
    assert [m.training for m in net.modules()] == before
    with pytest.raises(TritongenError, match="negative"):
        tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="bad", repo=tmp_path / "r2", max_batch_size=-1)
    assert [m.training for m in net.modules()] == before


def test_build_list_options_take_the_spec_files_mappings(tmp_path, monkeypatch):
    """inputs, outputs, dim_ranges, queue_policies and rate_limiter take the spec file's mappings from Python (they
    were refused as not text): the same spec as the CLI's strings, each item checked as the spec file's are, and a
    wrong mapping is a TritongenError naming the item."""
    made = _recorded_build_specs(monkeypatch)
    model = tmp_path / "m.pt"
    model.write_bytes(b"placeholder")  # never loaded: the spec only
    common = {"max_batch_size": 4, "priority_levels": 2, "repo": tmp_path / "repo"}
    cli_form = {
        "inputs": ["x:FP32:8,-1", "m:INT64:-1"],
        "outputs": ["y"],
        "dim_ranges": ["x:1:1:16:64"],
        "queue_policies": ["1:timeout_us=5000,action=reject,max_size=8"],
        "rate_limiter": ["R1:2:global"],
    }
    py_form = {
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [8, -1]}, "m:INT64:-1"],  # the two forms mix
        "outputs": {"name": "y"},  # one mapping on its own is one item
        "dim_ranges": [{"input": "x", "axis": 1, "min": 1, "opt": 16, "max": 64}],
        "queue_policies": [{"priority": 1, "timeout_us": 5000, "action": "reject", "max_size": 8}],
        "rate_limiter": [{"name": "R1", "count": 2, "global": True}],
    }
    for given in (cli_form, py_form):
        with pytest.raises(TritongenError, match="stop here"):
            tritongen.build(model, **common, **given)
    cli_spec, py_spec = made
    for key in ("inputs", "output_names", "dim_ranges", "queue_policies", "rate_limiter"):
        assert getattr(py_spec, key) == getattr(cli_spec, key), key
    assert [i.name for i in py_spec.inputs] == ["x", "m"] and py_spec.rate_limiter[0].is_global
    for bad, words in (
        ({"inputs": [{"dtype": "FP32"}]}, "build option: inputs item #1 is {'dtype': 'FP32'}, not a mapping of"),
        ({"inputs": [{"name": "x", "dims": ["3"]}]}, "inputs item #1 dims is ['3'], not a list of at most"),
        ({"dim_ranges": [{"input": "x", "axis": 1}]}, "dim_ranges item #1 is"),
        ({"queue_policies": [{"priority": 1, "timeout_us": -5}]}, "timeout_us is -5, not an integer of 0 or more"),
        ({"rate_limiter": [{"name": "R1", "count": 2, "global": "yes"}]}, "global is 'yes', not true or false"),
        ({"outputs": [{"label": "y"}]}, "outputs item #1 is {'label': 'y'}, not a name or a mapping with a name"),
        ({"inputs": [3]}, "build option inputs item 3 is an int, not text (a str) or a mapping: pass"),
    ):
        given = {**cli_form, **bad}
        with pytest.raises(TritongenError) as err:
            tritongen.build(model, **common, **given)
        assert words in str(err.value), (bad, str(err.value))


def test_build_takes_any_path_like_and_checks_an_in_memory_name_first(tmp_path):
    from pathlib import PurePosixPath

    class Where:
        def __init__(self, path):
            self.path = path

        def __fspath__(self):
            return self.path

    for given in (PurePosixPath(tmp_path / "missing.pt"), Where(str(tmp_path / "missing.pt"))):
        with pytest.raises(TritongenError, match="does not exist"):  # read as a path, not refused as an object
            tritongen.build(given, inputs=["x:FP32:4"], repo=tmp_path / "repo")
    with pytest.raises(TritongenError, match="is bytes"):
        tritongen.build(Where(b"/tmp/model.pt"), inputs=["x:FP32:4"], repo=tmp_path / "repo")
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(4, 3)
    for bad in ("a/b", "..", "../up"):
        with pytest.raises(TritongenError, match="is not a valid folder name"):
            tritongen.build(net, example_inputs=[torch.randn(2, 4)], name=bad, repo=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_verify_report_says_a_signature_was_not_checked(tmp_path):
    """A signed repository verified without a public key: the API's report names the unchecked signature and its
    summary ends with the hint the CLI prints; no signature file, no hint."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    report = tritongen.verify(repo, allow_unverified=["double"])
    assert report.unchecked_signature is None and "hint:" not in report.summary()
    sig = repo / ".tritongen-signature.sig"
    sig.write_bytes(b"not read without a public key")
    report = tritongen.verify(repo, allow_unverified=["double"])
    assert report.unchecked_signature == sig and report.signature is None
    assert report.summary().splitlines()[-1] == (
        f"hint: signature {sig} was not checked (no --public-key): pass --public-key with the signer's public key "
        "to check that the files are as signed"
    )
    elsewhere = tmp_path / "elsewhere.sig"
    sig.rename(elsewhere)
    assert tritongen.verify(repo, allow_unverified=["double"]).unchecked_signature is None
    report = tritongen.verify(repo, allow_unverified=["double"], signature=elsewhere)
    assert report.unchecked_signature == elsewhere and f"signature {elsewhere} was not checked" in report.summary()


def test_build_docstring_maps_every_keyword_to_its_flag():
    """build's table names every keyword build_spec_from_options takes and the CLI flag that sets it."""
    import inspect

    from tritongen.cli import cli
    from tritongen.spec import build_spec_from_options

    rows = dict(re.findall(r"^ {8}([a-z_0-9]+) +(--[a-z0-9-]+) ", tritongen.build.__doc__, re.M))
    keywords = set(inspect.signature(build_spec_from_options).parameters) - {"model_path"}
    assert set(rows) == keywords
    flags = {p.name: p.opts[0] for p in cli.commands["build"].params if p.name != "model"}
    flags["warmup"] = flags.pop("no_warmup")
    assert rows == flags
    for text in (tritongen.__doc__, tritongen.perf.__doc__):
        assert "http_port=0" not in text and "tritongen.perf.report." not in text


# Every API keyword is checked before any work (the paths below do not exist: a check made after the first read
# would say so instead), with a did-you-mean, or the API's name for a CLI flag's spelling.
@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda r: tritongen.perf("m", concurency=4),
            r"perf\(\) has no option 'concurency': did you mean 'concurrency'",
        ),
        (lambda r: tritongen.infer("m", checks=True), r"infer\(\) has no option 'checks': did you mean 'check'"),
        (lambda r: tritongen.tune(r / "m", max_p99_ms=10, dry_run=True), r"--dry-run\): pass write=False"),
        (lambda r: tritongen.serve(r, http_prot=0), r"did you mean 'http_port'"),
        (lambda r: tritongen.rollout(r, "m", to_version=2, min_cosin=0.9), r"did you mean 'min_cosine'"),
        (lambda r: tritongen.rollout(r, "m", to_version=2, header=["a=b"]), r"pass headers=\{name: value\}"),
        (lambda r: tritongen.rollback(r, "m", urll="x"), r"did you mean 'url'"),
        (lambda r: tritongen.engine(r, workspace_gb=2), r"pass workspace_bytes="),
        (lambda r: tritongen.build(r / "m.pt", instances=2), r"pass instance_count=N"),
        (lambda r: tritongen.build(r / "m.pt", no_warmup=True), r"pass warmup=False"),
        (lambda r: tritongen.build(r / "m.pt", dim_range=["x:0:1:2:3"]), r"pass dim_ranges="),
        (lambda r: tritongen.deploy(r, to="docker", out=r / "o", forse=True), r"did you mean 'force'"),
        (lambda r: tritongen.deploy(r, to="kubernetes", out=r / "o", namspace="p"), r"did you mean 'namespace'"),
        (lambda r: tritongen.deploy(r, to="kubernetes", out=r / "o", gpu=0), r"did you mean 'gpus'"),
        (lambda r: tritongen.deploy(r, to="docker", out=r / "o", ngc="99.99"), r"deploy\(\) has no option 'ngc'"),
        (lambda r: tritongen.deploy(r, to="docker", out=r / "o", slo_p99_ms=5), r"option slo_p99_ms is for kserve and"),
        (lambda r: tritongen.deploy(r, to="docker", out=r / "o", namespace="x"), r"namespace .*not docker"),
        (lambda r: tritongen.deploy(r, to="docker", out=r / "o", extra_package="a=b"), r"pass extra_packages="),
        (lambda r: tritongen.rollback(r, "m", golden=r / "g.npz"), r"rollback\(\) takes no golden"),
        (lambda r: tritongen.rollback(r, "m", min_cosine=0.5), r"rollback\(\) takes no min_cosine"),
        (lambda r: tritongen.validate(r, "2.51.0"), r"validate\(\): too many positional"),
    ],
)
def test_an_unknown_keyword_is_refused_before_any_work(tmp_path, call, message):
    with pytest.raises(TritongenError, match=message) as caught:
        call(tmp_path / "missing")
    assert "\n" not in str(caught.value)


def test_rollback_takes_a_rollout_only_option_given_as_none(tmp_path):
    """None is "not given" in every API function: rollback(golden=None) was refused as a rollout-only option. It
    goes on to the real work (here: the repository that does not exist)."""
    with pytest.raises(TritongenError) as caught:
        tritongen.rollback(tmp_path / "missing", "m", golden=None, min_cosine=None, out=None)
    assert "takes no" not in str(caught.value) and "missing" in str(caught.value), str(caught.value)


# Values of the wrong type are refused where they enter, naming the option and the type it wants.
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: tritongen.perf("m", duration_s="5"), r"duration_s='5' is a str, not a number: .*duration_s=5$"),
        (lambda r: tritongen.perf("m", url=8001), r"perf option url=8001 is an int, not text"),
        (lambda r: tritongen.infer("m", url=8001), r"infer option url=8001 is an int"),
        (lambda r: tritongen.perf("m", concurrency=["1", "4"]), r"concurrency item '1' is a str"),
        (lambda r: tritongen.perf("m", concurrency="1,x"), r"concurrency '1,x' is not a comma-separated list"),
        (lambda r: tritongen.perf("m", version_split=[("1", 90), (2, "x")]), r"'2:x' is not VERSION:PERCENT"),
        (lambda r: tritongen.tune(r / "m", max_p99_ms="10"), r"tune option max_p99_ms='10' is a str"),
        (lambda r: tritongen.serve(r, ready_timeout_s="60"), r"serve option ready_timeout_s='60' is a str"),
        (lambda r: tritongen.serve(r, http_port="8000"), r"http_port='8000' is a str, not a whole number"),
        (lambda r: tritongen.rollout(r, "m", to_version=2, min_cosine="0.9"), r"min_cosine='0.9' is a str"),
        (lambda r: tritongen.rollout(r, "m", to_version=2, min_top1="1"), r"rollout option min_top1='1'"),
        (lambda r: tritongen.rollout(r, "m", to_version=2, headers=["a=b"]), r"headers=\['a=b'\] is a list"),
        (lambda r: tritongen.deploy(r, to="kubernetes", out=r / "o", gpus="0"), r"gpus='0' is a str"),
        (lambda r: tritongen.validate(123), r"validate option repo=123 is an int, not a path"),
        (lambda r: tritongen.lint(5), r"lint option path=5 is an int, not a path"),
        (lambda r: tritongen.build(r / "m.pt", progress=True), r"progress=True is a bool, not a function"),
        (lambda r: tritongen.engine(r, workspace_bytes="2"), r"workspace_bytes='2' is a str"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_before_any_work(tmp_path, call, message):
    with pytest.raises(TritongenError, match=message) as caught:
        call(tmp_path / "missing")
    assert "\n" not in str(caught.value)


def test_specs_take_the_forms_the_cli_takes():
    from tritongen.infer import InferSpec
    from tritongen.perf import PerfSpec
    from tritongen.server import ServeSpec

    assert PerfSpec(model="m", concurrency=4).concurrency == (4,)
    assert PerfSpec(model="m", concurrency="1,4").concurrency == (1, 4)  # as --concurrency 1,4
    assert PerfSpec(model="m", request_rates=50).request_rates == (50.0,)
    assert PerfSpec(model="m", version_split={"1": 90, "2": 10}).version_split == (("1", 90), ("2", 10))
    assert PerfSpec(model="m", input_data=Path("a.npz")).input_data == Path("a.npz")
    # a str where texts or paths are expected is one item, never its letters
    assert InferSpec(name="m", texts="hello").texts == ("hello",)
    assert InferSpec(name="m", images="cat.jpg").images == (Path("cat.jpg"),)
    assert ServeSpec(repo=Path("."), http_port=8000).http_port == 8000


def test_allow_unverified_given_as_one_name(tmp_path):
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    repo = tmp_path / "repo"
    write_model(repo, "abc", DOUBLE_CONFIG, DOUBLE_MODEL)  # written by hand: no manifest
    tritongen.verify(repo, allow_unverified="abc")  # one model name, not 'a', 'b', 'c'


def test_every_cli_flag_is_an_api_keyword_or_names_one():
    """Each flag of a CLI command is an option of its API function, or a spelling the API answers with its own
    name (api.CLI_SPELLINGS), so a keyword copied from the command line is never met with a bare 'no option'."""
    import click

    from tritongen import api
    from tritongen.cli import cli

    for command, cmd in cli.commands.items():
        function = getattr(api, command, None)
        if function is None:
            continue
        known = set(function.options())
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            for flag in (*param.opts, *param.secondary_opts):
                spelling = flag.lstrip("-").replace("-", "_")
                assert spelling in known or spelling in api.CLI_SPELLINGS.get(command, {}), (command, flag)


def test_cli_deploy_refuses_another_targets_flag(tmp_path, capsys):
    from tritongen.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["deploy", str(tmp_path), "--to", "docker", "--out", str(tmp_path / "o"), "--slo-p99-ms", "5"])
    assert exit_info.value.code != 0
    assert "deploy option --slo-p99-ms is for kserve and kubernetes bundles, not docker" in capsys.readouterr().err


def test_errors_name_the_keyword_to_pass_from_python_and_the_flag_from_the_cli(tmp_path, capsys):
    """A build error written for the CLI ("pass --force to replace it") names the keyword a Python caller passes
    (force=True, new_version=True, name); the same error from the CLI keeps its flags."""
    torch = pytest.importorskip("torch")
    from tritongen.cli import main

    net = torch.nn.Linear(4, 3)
    repo = tmp_path / "repo"
    tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="net", repo=repo)
    with pytest.raises(TritongenError) as caught:
        tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="net", repo=repo)
    assert "pass force=True to replace it, new_version=True to add a version beside it, or choose another name" in (
        str(caught.value)
    )
    assert caught.value.message == str(caught.value)
    model = repo / "net" / "1" / "model.onnx"
    with pytest.raises(SystemExit):
        main(["build", str(model), "--name", "net", "--repo", str(repo)])
    err = capsys.readouterr().err
    assert "pass --force to replace it, --new-version to add a version beside it, or choose another --name" in err
    with pytest.raises(TritongenError) as caught:  # after the CLI's call, the API's words again
        tritongen.build(model, name="net", repo=repo)
    assert "pass force=True" in str(caught.value)


def test_an_option_given_as_none_is_an_option_not_given(tmp_path):
    """None stands for "not given" in every API function (build's docstring says so; the CLI passes it): the spec's
    default stands instead of a type error. Nothing answers at the URL: the call gets that far."""
    import numpy as np

    import tritongen
    from tests.conftest import free_ports

    (port,) = free_ports(1)
    url = f"127.0.0.1:{port}"
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.zeros((1, 4), np.float32))
    for call in (
        lambda: tritongen.perf("m", url=url, label=None, engine=None, concurrency=1, duration_s=0.3, repo=None),
        lambda: tritongen.infer("m", url=url, texts=None, images=None, timeout_s=5, input_file=inputs),
    ):
        with pytest.raises(TritongenError, match=f"no Triton server answers at {url}"):
            call()


def test_serve_extra_args_in_one_string_are_split_as_a_shell_would(tmp_path):
    from tritongen.server import ServeSpec

    assert ServeSpec(repo=tmp_path, extra_args="--log-verbose 1 --id 'a b'").extra_args == (
        "--log-verbose",
        "1",
        "--id",
        "a b",
    )
    assert ServeSpec(repo=tmp_path, extra_args=["--log-verbose", "1"]).extra_args == ("--log-verbose", "1")
    with pytest.raises(TritongenError, match="cannot be split"):
        ServeSpec(repo=tmp_path, extra_args="--id 'a")


@pytest.mark.server
def test_infer_takes_arrays_in_memory_and_one_npy_for_a_one_input_model(tiny_server, tmp_path):
    """A notebook user had to write an .npz first (inputs= was no option); an .npy for the one-input model was sent
    as an input named "input" and refused by the server. Both go to the model's input now."""
    import numpy as np

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = tritongen.infer("double", url=tiny_server.grpc_url, inputs={"X": x})
    np.testing.assert_array_equal(result.outputs["Y"], x * 2 + 1)
    torch = pytest.importorskip("torch")
    result = tritongen.infer("double", url=tiny_server.grpc_url, inputs={"X": torch.from_numpy(x)})
    np.testing.assert_array_equal(result.outputs["Y"], x * 2 + 1)
    np.save(tmp_path / "x.npy", x)
    result = tritongen.infer("double", url=tiny_server.grpc_url, input_file=tmp_path / "x.npy")
    np.testing.assert_array_equal(result.outputs["Y"], x * 2 + 1)
    for bad, words in (
        ({"inputs": {}}, "infer option inputs is empty"),
        ({"inputs": {"X": [object()]}}, "infer input 'X' holds Python objects"),
        ({"inputs": {"X": x}, "input_file": tmp_path / "x.npy"}, "both input_file and inputs are given"),
        ({"inputs": {"X": x}, "check": True}, "check=True compares against the build's saved samples: drop inputs"),
    ):
        with pytest.raises(TritongenError, match=re.escape(words)):
            tritongen.infer("double", url=tiny_server.grpc_url, **bad)


def test_an_in_memory_module_failing_on_its_example_inputs_names_them(tmp_path):
    """The fix pointed at "the arrays of example_inputs.npz" and --sample-inputs, a file and a flag the caller never
    gave: it names example_inputs."""
    torch = pytest.importorskip("torch")
    with pytest.raises(TritongenError) as caught:
        tritongen.build(torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(2, 5)}, repo=tmp_path / "repo")
    assert "check example_inputs (names, order, dtypes, dims) against the module's forward()" in str(caught.value)
    assert ".npz" not in str(caught.value) and "sample" not in str(caught.value)


def test_an_error_shown_in_python_carries_the_lines_its_message_refers_to(tmp_path):
    """validate's error says "the config.pbtxt files named below": a traceback in Python (str(error)) shows them, as
    the CLI prints them under its one line; ``.message`` stays that one line."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    repo = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent
    config = repo / "double" / "config.pbtxt"
    config.write_text(re.sub(r"max_batch_size: \d+", "max_batch_size: -3", config.read_text()))
    with pytest.raises(TritongenError) as err:
        tritongen.validate(repo)
    assert "named below" in err.value.message and "\n" not in err.value.message
    assert str(err.value) == f"{err.value.message}\n{err.value.details}" and "double" in err.value.details


@pytest.mark.parametrize(
    "example, words",
    [
        ("bfloat16", "example input 'x' is a bfloat16 tensor, which NumPy cannot hold"),
        ("meta", "example input 'x' is a tensor on the meta device"),
        ("generator", "example_inputs is an iterator or generator"),
    ],
)
def test_example_inputs_numpy_cannot_hold_are_refused_in_one_line(tmp_path, example, words):
    """Each was a raw TypeError or NotImplementedError from deep inside numpy or torch."""
    import torch

    x = torch.randn(2, 4)
    given = {
        "bfloat16": {"x": x.to(torch.bfloat16)},
        "meta": {"x": torch.empty(2, 4, device="meta")},
        "generator": (t for t in [x]),
    }[example]
    with pytest.raises(TritongenError, match=re.escape(words)):
        tritongen.build(torch.nn.Linear(4, 3), example_inputs=given, repo=tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_infer_inputs_numpy_cannot_hold_are_refused_before_sending():
    import torch

    with pytest.raises(TritongenError, match="infer input 'x' is a bfloat16 tensor"):
        tritongen.infer("m", url="127.0.0.1:1", inputs={"x": torch.ones(2, 4, dtype=torch.bfloat16)})


def _double_repo(tmp_path: Path) -> Path:
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    return write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent


@pytest.mark.server
def test_a_server_started_outside_a_with_block_is_stopped_with_its_checked_copy(tmp_path, server_install):
    """server.stop() (a notebook's start and stop) left the whole checked copy behind until the context manager's
    exit; the context manager itself, asked for a server's attribute, raised a raw AttributeError."""
    from tests.conftest import free_ports

    http, grpc, metrics = free_ports(3)
    serving = tritongen.serve(
        _double_repo(tmp_path), allow_unverified=["double"], http_port=http, grpc_port=grpc, metrics_port=metrics
    )
    with pytest.raises(TritongenError, match=r"returns a context manager .* \(asked for \.grpc_url\)"):
        serving.grpc_url  # noqa: B018
    assert not hasattr(serving, "grpc_url")
    del serving  # the notebook form keeps no reference to it: freed, it stopped the server at once
    import gc
    import signal

    server = tritongen.serve(
        _double_repo(tmp_path), allow_unverified=["double"], http_port=http, grpc_port=grpc, metrics_port=metrics
    ).__enter__()
    gc.collect()
    root = server.spec.repo.parent.parent  # the private folder of the checked copy
    assert (root / "copy").is_dir() and server.is_running()
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # a SIGTERM stops it cleanly meanwhile
    assert server.stop() == 0
    assert not root.exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.server
def test_sigterm_in_a_serve_block_stops_the_server_and_removes_its_copy(tmp_path, server_install):
    """Python's default for SIGTERM ends the process at once: the checked copy and the log stayed behind."""
    import os
    import signal

    from tests.conftest import free_ports

    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3)))
    script = (
        "import sys, time, tritongen\n"
        f"with tritongen.serve({str(_double_repo(tmp_path))!r}, allow_unverified=['double'], **{ports!r}) as s:\n"
        "    print(s.spec.repo.parent.parent, s.pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        root, pid = proc.stdout.readline().split()
        assert Path(root).is_dir()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and not Path(root).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


def test_example_inputs_are_named_as_given_not_as_the_temporary_file_they_are_saved_to(tmp_path):
    """The messages spoke of "sample file example_inputs.npz" (and "pickled objects" of a file the caller never
    wrote, for a None)."""
    import torch

    with pytest.raises(TritongenError) as err:
        tritongen.build(
            torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(20, 4)}, repo=tmp_path / "r", max_batch_size=8
        )
    assert err.value.message.startswith("example_inputs holds a batch of 20") and ".npz" not in err.value.message
    assert "rows in example_inputs" in err.value.fix
    with pytest.raises(TritongenError, match=r"example input 'x' holds Python objects \(NoneType\), not numbers"):
        tritongen.build(torch.nn.Linear(4, 3), example_inputs={"x": None}, repo=tmp_path / "r")


def test_a_serve_entered_twice_is_one_error_not_contextlibs_attribute_error():
    """A notebook cell re-run: `cm.__enter__()` a second time raised "'_GeneratorContextManager' object has no
    attribute 'args'" from inside contextlib."""
    import contextlib
    import types

    from tritongen.api import _Serving

    started = []

    @contextlib.contextmanager
    def manager():
        started.append(1)
        yield types.SimpleNamespace(owner=None, cleanups=[])

    serving = _Serving(manager())
    server = serving.__enter__()
    assert server.owner is serving and started == [1]
    with pytest.raises(TritongenError, match=r"was started already") as err:
        serving.__enter__()
    assert "call tritongen.serve(repo, ...) again" in err.value.fix and started == [1]
    serving.__exit__(None, None, None)
    with pytest.raises(TritongenError, match=r"was started already"):
        serving.__enter__()


def test_help_of_each_api_function_names_the_cli_flags_it_spells_otherwise():
    """help(tritongen.build) had a table of keyword and flag; help(perf) and help(deploy) had none, and a newcomer
    met report_dir, request_rates and perf_results only in errors."""
    import tritongen
    from tritongen.api import CLI_SPELLINGS

    for command, spelled in CLI_SPELLINGS.items():
        doc = getattr(tritongen, command).__doc__ or ""
        for flag in spelled:
            assert f"--{flag.replace('_', '-')}" in doc, (command, flag)
