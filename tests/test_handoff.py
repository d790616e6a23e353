"""Hand-offs (issue 16, item 8): beside the model repository, a perf_analyzer command line and a Model Analyzer
``config.yaml`` that reproduce tritongen perf's measurement; the command runs against the served model, and the
config is what Model Analyzer's documented schema (and, where it is installed, its own loader) accepts."""

from __future__ import annotations

import base64
import csv
import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import factories
from tritongen.handoff import HANDOFF_DIR, handoff_from_model
from tritongen.layout import SAMPLES_NAME, latest_artifacts
from tritongen.npz import arrays_from_npz
from tritongen.perf import PerfSpec

# Model Analyzer's documented profile keys (docs/config.md of triton-inference-server/model_analyzer) that a
# hand-off may use: top level, per model, per model's parameters.
MA_TOP_KEYS = {
    "model_repository",
    "profile_models",
    "run_config_search_disable",
    "client_protocol",
    "triton_launch_mode",
    "triton_grpc_endpoint",
    "triton_http_endpoint",
    "triton_metrics_url",
}
MA_MODEL_KEYS = {"parameters", "perf_analyzer_flags", "cpu_only", "model_config_parameters", "objectives"}
MA_PARAMETER_KEYS = {"concurrency", "batch_sizes", "request_rate"}
# Flags Model Analyzer sets itself and overrides (docs/config.md, "Important Notes"): a hand-off must not set them.
MA_OWN_PA_FLAGS = {
    "concurrency-range",
    "request-rate-range",
    "batch-size",
    "model-name",
    "measurement-mode",
    "service-kind",
    "triton-server-directory",
    "model-repository",
    "protocol",
    "url",
}
MA_LOADER = """
import json, sys
from model_analyzer.cli.cli import CLI
from model_analyzer.config.input.config_command_profile import ConfigCommandProfile
config = ConfigCommandProfile()
cli = CLI()
cli.add_subcommand(cmd="profile", help="", config=config)
sys.argv = ["model-analyzer", "profile", "-f", sys.argv[1]]
cli.parse()
spec = config.profile_models[0]
print(json.dumps({"model": spec.model_name(), "flags": spec.perf_analyzer_flags(), "parameters": spec.parameters(),
                  "cpu_only": spec.cpu_only(), "mode": config.triton_launch_mode,
                  "search_disabled": config.run_config_search_disable, "repo": config.model_repository}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import tritongen

    work = tmp_path_factory.mktemp("handoff")
    seq = factories.save_model(
        factories.make_dynamic_seq(), work / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    result = tritongen.build(seq, name="seq", inputs=["x:FP32:-1,8"], repo=work / "repo")
    return work, result


def test_build_writes_the_handoffs_beside_the_repository_and_verify_is_unaffected(built):
    from tritongen.verify import verify_repository

    work, result = built
    assert result.handoff_dir == work / HANDOFF_DIR / "seq"
    assert sorted(p.name for p in result.handoff_dir.iterdir()) == [
        "config.yaml",
        "input_data.json",
        "perf_analyzer.sh",
    ]
    repo_files = [p for p in (work / "repo").rglob("*") if p.is_file()]
    assert not any("handoff" in str(p.relative_to(work / "repo")) for p in repo_files)
    assert verify_repository(work / "repo").ok


def test_a_repository_named_handoff_gets_its_handoffs_beside_it_not_inside():
    """--repo handoff wrote config.yaml, input_data.json and perf_analyzer.sh into the fresh repository's model
    folder, which verify then refused (files no manifest lists), and serve with it."""
    from tritongen.handoff import handoff_dir_for

    assert handoff_dir_for(Path("/x/model_repository")) == Path("/x/handoff")
    assert handoff_dir_for(Path("/x/handoff")) == Path("/x/handoff-files")


def test_input_data_is_the_saved_samples_as_batch_one_requests(built):
    work, result = built
    artifacts, _ = latest_artifacts(work / "repo", "seq")
    samples = arrays_from_npz(artifacts / SAMPLES_NAME)["x"]
    entries = json.loads((result.handoff_dir / "input_data.json").read_text())["data"]
    assert len(entries) == min(len(samples), 64)
    for row, entry in zip(samples, entries):
        got = np.frombuffer(base64.b64decode(entry["x"]["b64"]), np.float32).reshape(entry["x"]["shape"])
        np.testing.assert_array_equal(got, row)
    script = (result.handoff_dir / "perf_analyzer.sh").read_text()
    length = samples.shape[1]  # the dynamic dimension, at the samples' size
    assert f"--shape x:{length},8" in script and "--concurrency-range 1:1" in script and "-b 1" in script


def test_model_analyzer_config_uses_only_its_documented_keys(built):
    work, result = built
    text = (result.handoff_dir / "config.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) <= MA_TOP_KEYS and config["run_config_search_disable"] is True
    assert Path(config["model_repository"]) == (work / "repo").resolve()
    (model,) = config["profile_models"].items()
    name, profile = model
    assert name == "seq" and set(profile) <= MA_MODEL_KEYS and profile["cpu_only"] is True  # local target: CPU
    assert set(profile["parameters"]) <= MA_PARAMETER_KEYS and profile["parameters"]["concurrency"] == [1, 4]
    flags = profile["perf_analyzer_flags"]
    assert not set(flags) & MA_OWN_PA_FLAGS and all("_" not in k for k in flags)  # MA wants dash-case flags
    assert Path(flags["input-data"]).is_file() and flags["shape"] == [f"x:{len(_first_row(result))},8"]


def _first_row(result):
    entry = json.loads((result.handoff_dir / "input_data.json").read_text())["data"][0]["x"]
    return range(entry["shape"][0])


def _model_analyzer_python() -> Path | None:
    """Model Analyzer's own environment, where one exists (bench/tune_vs_model_analyzer.py creates it)."""
    from tritongen.layout import cache_root

    given = os.environ.get("TRITONGEN_MODEL_ANALYZER_PYTHON")
    candidate = Path(given) if given else cache_root() / "venv-model-analyzer" / "bin" / "python"
    if not candidate.is_file():
        return None
    # an environment still being made (or left half-made by an interrupted install) has no model_analyzer yet
    probe = subprocess.run([str(candidate), "-c", "import model_analyzer"], capture_output=True, timeout=120)
    return candidate if probe.returncode == 0 else None


def test_model_analyzer_loads_the_config_with_its_own_loader(built):
    from tritongen.perf.perf_analyzer import find_perf_analyzer

    python = _model_analyzer_python()
    if python is None:
        pytest.skip("Model Analyzer is not installed here (bench/tune_vs_model_analyzer.py makes its environment)")
    work, result = built
    env = dict(os.environ, PATH=f"{find_perf_analyzer().binary.parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(
        [str(python), "-c", MA_LOADER, str(result.handoff_dir / "config.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["model"] == "seq" and loaded["mode"] == "remote" and loaded["search_disabled"] is True
    assert loaded["parameters"]["concurrency"] == [1, 4] and loaded["cpu_only"] is True
    assert loaded["flags"]["input-data"] == str(result.handoff_dir / "input_data.json")


def _as_a_user(**extra: str) -> dict[str, str]:
    """The environment of someone who runs the hand-off in a shell of the README's setup: no perf_analyzer on PATH,
    no LD_LIBRARY_PATH, no PERF_ANALYZER (unless given)."""
    import shutil

    folders = [
        d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "perf_analyzer").exists()
    ]
    path = os.pathsep.join(folders)
    if shutil.which("bash", path=path) is None:
        pytest.skip("perf_analyzer shares its folder with bash here: no PATH without it")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PERF_ANALYZER")}
    return {**env, "PATH": path, **extra}


@pytest.mark.server
def test_perf_analyzer_script_runs_against_the_served_model(built, tmp_path, server_install):
    """``./perf_analyzer.sh URL`` as a user runs it: perf_analyzer is not on PATH and LD_LIBRARY_PATH is unset, so
    the script falls back to the perf_analyzer of the installation that wrote it, with tritongen's library path;
    and with ``PERF_ANALYZER`` set to that binary it runs too."""
    from tritongen.errors import TritongenError
    from tritongen.perf.perf_analyzer import find_perf_analyzer
    from tritongen.server import ServeSpec, server_from_repository

    try:
        install = find_perf_analyzer()
    except TritongenError as err:
        pytest.skip(f"perf_analyzer not installed ({err.problem}); run scripts/install_perf_analyzer.sh")
    work, _ = built
    # the same writer with a short measurement (the build's hand-off uses tritongen perf's defaults)
    quick = PerfSpec(model="seq", concurrency=(2,), duration_s=3.0, stability_pct=100.0, max_windows=10, repo=None)
    made = handoff_from_model(work / "repo", "seq", tmp_path, spec=quick)
    assert f"TRITONGEN_PERF_ANALYZER={shlex.quote(str(install.binary.absolute()))}\n" in made.script.read_text()
    results = made.folder / "results_c2.csv"
    with server_from_repository(ServeSpec(repo=work / "repo")) as server:
        for extra in ({}, {"PERF_ANALYZER": str(install.binary)}):
            results.unlink(missing_ok=True)
            run = subprocess.run(
                [str(made.script), server.grpc_url],
                capture_output=True,
                text=True,
                env=_as_a_user(**extra),
                cwd=tmp_path,
                timeout=240,
            )
            assert run.returncode == 0, (extra, run.stdout[-2000:], run.stderr[-2000:])
            rows = list(csv.DictReader(results.read_text().splitlines()))
            assert rows and float(rows[-1]["Inferences/Second"]) > 0


def test_without_a_perf_analyzer_the_script_says_what_to_do_in_one_line(built, tmp_path):
    """Nothing to run (PERF_ANALYZER names no file; or, on another machine, none on PATH and the writer's fallback
    absent): one line on stderr saying what to install or set, exit 127, nothing run."""
    from tritongen.handoff import LocalPerfAnalyzer, _script, perf_analyzer_commands

    work, _ = built
    made = handoff_from_model(work / "repo", "seq", tmp_path / "here")
    missing = tmp_path / "no" / "perf_analyzer"
    run = subprocess.run(
        [str(made.script), "127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=_as_a_user(PERF_ANALYZER=str(missing)),
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (127, "") and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"perf_analyzer.sh: PERF_ANALYZER={missing} is neither an executable file")
    assert "unset it to use perf_analyzer on PATH" in run.stderr

    commands = perf_analyzer_commands(PerfSpec(model="seq", repo=None), _requests(work))
    for local, where in ((LocalPerfAnalyzer(missing, ("/no/lib",)), f" nor at {missing}"), (None, "")):
        script = tmp_path / ("elsewhere" if local else "bare") / "perf_analyzer.sh"
        script.parent.mkdir()
        script.write_text(_script("seq", commands, local))
        script.chmod(0o755)
        run = subprocess.run([str(script)], capture_output=True, text=True, env=_as_a_user(), timeout=60)
        assert (run.returncode, run.stdout) == (127, "") and run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith(f"perf_analyzer.sh: perf_analyzer is not on PATH{where}: install it")
        assert run.stderr.rstrip().endswith("and put it on PATH, or set PERF_ANALYZER to its binary")
        assert sorted(p.name for p in script.parent.iterdir()) == ["perf_analyzer.sh"]  # nothing ran


def _requests(work: Path):
    from tritongen.perf.inputs import request_set_from_samples

    return request_set_from_samples(work / "repo", "seq", True)


def test_links_are_never_followed(built, tmp_path):
    from tritongen.errors import TritongenError

    work, _ = built
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "seq").symlink_to(elsewhere)
    with pytest.raises(TritongenError, match="symbolic link"):
        handoff_from_model(work / "repo", "seq", out)
    assert not list(elsewhere.iterdir())
    # a link where a file goes is replaced by the file, and what it pointed to is untouched
    (out / "seq").unlink()
    (out / "seq").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (out / "seq" / "config.yaml").symlink_to(victim)
    made = handoff_from_model(work / "repo", "seq", out)
    assert victim.read_text() == "mine" and not made.model_analyzer_config.is_symlink()
    assert sorted(p.name for p in made.folder.iterdir()) == ["config.yaml", "input_data.json", "perf_analyzer.sh"]


def test_a_model_of_the_same_name_in_another_repository_beside_it_gets_its_own_folder(built, tmp_path):
    import shutil

    work, _ = built
    other = tmp_path / "other_repo"
    shutil.copytree(work / "repo", other)
    out = tmp_path / "handoff"
    first = handoff_from_model(work / "repo", "seq", out)
    second = handoff_from_model(other, "seq", out)
    assert first.folder == out / "seq" and second.folder == out / "other_repo-seq"
    assert yaml.safe_load(first.model_analyzer_config.read_text())["model_repository"] == str((work / "repo").resolve())
    assert yaml.safe_load(second.model_analyzer_config.read_text())["model_repository"] == str(other.resolve())
    assert handoff_from_model(work / "repo", "seq", out).folder == first.folder  # its own folder, written again


def test_a_crafted_config_yaml_in_the_handoff_folder_is_replaced_not_obeyed(tmp_path):
    from tritongen.handoff import _written_for

    folder = tmp_path / "seq"
    folder.mkdir()
    assert _written_for(folder) is None  # nothing there
    (folder / "config.yaml").write_text("[" * 200_000)  # nesting deep enough to exhaust the parser
    assert _written_for(folder) is None
    (folder / "config.yaml").write_text("model_repository: [1, 2]\n")
    assert _written_for(folder) is None
    (folder / "config.yaml").write_text("model_repository: /some/repo\n")
    assert _written_for(folder) == "/some/repo"
