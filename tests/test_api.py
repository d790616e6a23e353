"""The public Python API: what `import tritongen` offers, building an in-memory module, and the README example."""

from __future__ import annotations

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
    assert tritongen.validate(repo).ok
    tritongen.verify(repo)
    with pytest.raises(TritongenError, match="example_inputs"):
        tritongen.build(net, name="again", repo=repo)


def test_build_refuses_what_it_cannot_build(tmp_path):
    with pytest.raises(TritongenError, match="cannot build a dict"):
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
