"""Model files whose graph reads or writes files when it loads or runs (tritongen.load.safety.SIDE_EFFECT_OPS).

A TorchScript forward calling ``torch.from_file(path, shared=True)`` and filling the tensor rewrote a file the user
could write during ``tritongen build``, without --allow-pickle, before the export failed; a ``__setstate__`` calling
``torch.save`` wrote a file inside ``torch.jit.load`` itself; a ``.pt2`` program with an ``aten.from_file`` node
did the same through ``torch.export.load``'s module. Each is refused now before anything of it runs."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import torch

from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.errors import TritongenError
from tritongen.load import module_from_file, safety


class _Maps(torch.nn.Module):
    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.victim, True, 4, dtype=torch.uint8)
        t.fill_(88)
        return x + t[:4].float() * 0


class _Outer(torch.nn.Module):  # the op one submodule down: the graph walk looks into every module
    def __init__(self, victim: str) -> None:
        super().__init__()
        self.inner = _Maps(victim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class _SavesOnLoad(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        torch.save(torch.zeros(1), self.target)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"hello world")
    return victim


def test_a_torchscript_forward_mapping_a_file_writable_is_refused_before_it_runs(tmp_path):
    victim = _victim(tmp_path)
    torch.jit.script(_Outer(str(victim))).save(str(tmp_path / "maps.pt"))
    code, out, err = _run(["build", str(tmp_path / "maps.pt"), "--input", "x:FP32:4", "--repo", str(tmp_path / "repo")])
    _assert_one_clean_line("maps", code, out, err, ("calls from_file, which read or write files",))
    assert victim.read_bytes() == b"hello world" and not (tmp_path / "repo").exists()


def test_the_graph_walk_finds_what_the_code_scan_would_miss(tmp_path, monkeypatch):
    """Both checks hold on their own: with the source scan blind, the loaded graphs are still walked."""
    victim = _victim(tmp_path)
    torch.jit.script(_Outer(str(victim))).save(str(tmp_path / "maps.pt"))
    monkeypatch.setattr(safety, "side_effects_in_code", lambda text: [])
    with pytest.raises(TritongenError, match="calls aten::from_file"):
        module_from_file(tmp_path / "maps.pt")
    assert victim.read_bytes() == b"hello world"
    assert safety.side_effect_ops_in_script_module(torch.jit.script(torch.nn.Linear(2, 2))) == []


def test_a_torchscript_setstate_that_writes_a_file_is_refused_before_torch_loads_it(tmp_path):
    written = tmp_path / "written.pt"
    scripted = torch.jit.script(_SavesOnLoad(str(written)))
    scripted.save(str(tmp_path / "saves.pt"))
    written.unlink(missing_ok=True)  # saving ran __getstate__ only; the load would run __setstate__
    with pytest.raises(TritongenError, match=r"calls save, which read or write files"):
        module_from_file(tmp_path / "saves.pt")
    assert not written.exists()


def _is_code(name: str) -> bool:
    return "/code/" in name and name.endswith(".py")


def _rewritten(source: Path, target: Path, edit, members=_is_code) -> Path:
    """``source``'s archive with the records ``members`` picks (TorchScript code by default) edited by ``edit``
    (text -> text)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if members(info.filename):
                data = edit(data.decode()).encode()
            zout.writestr(info, data)
    return target


@pytest.mark.parametrize(
    ("spelling", "named"),
    [
        ("torch.autograd.save(", "save"),  # an ordinary spelling the first scan's words missed
        ("torch.  # a comment inside the call\n        save(", "code that does not parse as Python"),
        ("torch.\\\n        save(", "save"),  # a line continuation
        ('getattr(torch, "sa" "ve")(', "getattr on torch"),  # adjacent literals, joined by TorchScript's parser
    ],
)
def test_spellings_of_save_in_setstate_are_refused_before_the_load(tmp_path, spelling, named):
    """Reviewers' edits of code/__torch__.py past a word scan and then a token scan: each wrote its file inside
    torch.jit.load, where only the source check comes in time."""
    written = tmp_path / "written.pt"
    torch.jit.script(_SavesOnLoad(str(written))).save(str(tmp_path / "saves.pt"))
    written.unlink(missing_ok=True)
    edited = _rewritten(tmp_path / "saves.pt", tmp_path / "edited.pt", lambda t: t.replace("torch.save(", spelling))
    with zipfile.ZipFile(edited) as archive:  # the edit took
        assert any(spelling.split("(")[0] in archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    with pytest.raises(TritongenError, match=rf"calls {re.escape(named)}, which read or write files"):
        module_from_file(edited)
    assert not written.exists()


def test_code_that_only_looks_like_a_side_effect_is_not_refused():
    code = "self.saved = saved_x  # save for later\nx = 'save'\ny = self.save(x)\nz = getattr(self, '0')"
    assert safety.side_effects_in_code(code) == []


def _pt2_with_from_file(tmp_path: Path, victim: Path) -> Path:
    """A plain ``x + 1`` export whose program gains ``from_file(victim, shared)``, ``fill_``, ``_to_copy`` nodes
    feeding the add (torch's verifier takes it: the archive declares the TRAINING dialect)."""

    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(AddOne().eval(), (torch.zeros(2, 4),)), str(plain))
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(plain) as zin:
        names = zin.namelist()
        (program_name,) = [n for n in names if n.endswith("/models/model.json")]
        program = json.loads(zin.read(program_name))
        graph = program["graph_module"]["graph"]

        def meta(dtype: int) -> dict:
            return {
                "dtype": dtype,
                "sizes": [{"as_int": 4}],
                "requires_grad": False,
                "device": {"type": "cpu", "index": None},
                "strides": [{"as_int": 1}],
                "storage_offset": {"as_int": 0},
                "layout": 7,
            }

        graph["tensor_values"].update(ff=meta(1), filled=meta(1), cvt=meta(7))
        add = graph["nodes"][0]
        arg = {"name": "self", "kind": 1}
        graph["nodes"] = [
            {
                "target": "torch.ops.aten.from_file.default",
                "inputs": [
                    {"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
                    {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
                    {"name": "size", "arg": {"as_int": 4}, "kind": 1},
                    {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},
                ],
                "outputs": [{"as_tensor": {"name": "ff"}}],
                "metadata": {},
                "name": "ff",
            },
            {
                "target": "torch.ops.aten.fill_.Scalar",
                "inputs": [
                    {**arg, "arg": {"as_tensor": {"name": "ff"}}},
                    {"name": "value", "arg": {"as_int": 88}, "kind": 1},
                ],
                "outputs": [{"as_tensor": {"name": "filled"}}],
                "metadata": {},
                "name": "filled",
            },
            {
                "target": "torch.ops.aten._to_copy.default",
                "inputs": [
                    {**arg, "arg": {"as_tensor": {"name": "filled"}}},
                    {"name": "dtype", "arg": {"as_scalar_type": 7}, "kind": 2},
                ],
                "outputs": [{"as_tensor": {"name": "cvt"}}],
                "metadata": {},
                "name": "cvt",
            },
            {**add, "inputs": [add["inputs"][0], {"name": "other", "arg": {"as_tensor": {"name": "cvt"}}, "kind": 1}]},
        ]
        with zipfile.ZipFile(crafted, "w", zipfile.ZIP_STORED) as zout:
            for name in names:
                zout.writestr(
                    zin.getinfo(name), json.dumps(program).encode() if name == program_name else zin.read(name)
                )
    return crafted


def test_an_exported_program_with_a_from_file_node_is_refused_before_torch_loads_it(tmp_path):
    victim = _victim(tmp_path)
    crafted = _pt2_with_from_file(tmp_path, victim)
    for allow in ([], ["--allow-pickle"]):  # no opt-in lets it run: no served model needs it
        code, out, err = _run(["build", str(crafted), "--repo", str(tmp_path / "repo"), *allow])
        _assert_one_clean_line("pt2", code, out, err, ("calls aten::from_file, which read or write files",))
    assert victim.read_bytes() == b"hello world" and not (tmp_path / "repo").exists()


def test_an_exported_program_is_walked_again_as_torch_resolved_it(tmp_path, monkeypatch):
    """torch resolves torch._ops.ops.aten.from_file.default as torch.ops.aten.from_file.default: a target spelled
    so passed a prefix check, and one forward rewrote the victim. The loaded program's graph is walked too."""
    victim = _victim(tmp_path)
    crafted = _pt2_with_from_file(tmp_path, victim)
    respelled = _rewritten(
        crafted,
        tmp_path / "respelled.pt2",
        lambda text: text.replace("torch.ops.aten.from_file", "torch._ops.ops.aten.from_file"),
        members=lambda name: name.endswith("/models/model.json"),
    )
    with pytest.raises(TritongenError, match="calls aten::from_file"):
        module_from_file(respelled)
    monkeypatch.setattr(safety, "side_effect_op_of_target", lambda target: None)  # the file's scan blind
    with pytest.raises(TritongenError, match="calls aten::from_file"):
        module_from_file(crafted)
    assert victim.read_bytes() == b"hello world"


def test_a_target_names_a_side_effect_op_only_for_those_ops():
    assert safety.side_effect_op_of_target("torch.ops.aten.from_file.default") == "aten::from_file"
    assert safety.side_effect_op_of_target("torch._ops.ops.aten.from_file.default") == "aten::from_file"
    assert safety.side_effect_op_of_target("torch.ops.aten.save.default") == "aten::save"
    assert safety.side_effect_op_of_target("torch.ops.aten.add.Tensor") is None
    assert safety.side_effect_op_of_target("from_file") is None


def test_a_file_swapped_after_the_checks_is_not_what_loads(tmp_path, monkeypatch):
    """The checks read the model file, then torch opened it again by its path: a file swapped in between (after
    the side-effect scan, before torch.jit.load) was what loaded. Checks and load now read one private copy."""
    victim = _victim(tmp_path)
    model = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Linear(4, 4)).save(str(model))
    torch.jit.script(_Outer(str(victim))).save(str(tmp_path / "evil.pt"))
    checked = safety.check_torchscript_code
    seen = []

    def check_then_swap(path):
        checked(path)
        seen.append(Path(path))
        model.write_bytes((tmp_path / "evil.pt").read_bytes())  # the attacker's moment

    monkeypatch.setattr("tritongen.load.check_torchscript_code", check_then_swap)
    loaded = module_from_file(model)
    assert seen and seen[0] != model and loaded.source == model  # checked a copy; named by the user's path
    out = loaded.module(torch.zeros(1, 4))
    assert out.shape == (1, 4) and victim.read_bytes() == b"hello world"
    with pytest.raises(TritongenError, match=rf"{re.escape(str(model))} calls from_file"):  # the swap, next time
        module_from_file(model)


def test_a_copy_that_cannot_be_written_is_one_error(tmp_path, monkeypatch):
    import shutil

    model = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(model))

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    words = rf"cannot copy {re.escape(str(model))} into a private folder .*: No space"
    with pytest.raises(TritongenError, match=words):
        module_from_file(model)


def test_the_program_a_pt2_builds_its_inputs_from_is_the_program_checked(tmp_path, monkeypatch):
    """A .pt2 build read its inputs from a program loaded from the user's path (checked, then opened again): that
    read goes through the same private copy as the load."""
    from tritongen.load import exported
    from tritongen.spec import build_spec_from_options

    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    model = tmp_path / "add.pt2"
    torch.export.save(torch.export.export(AddOne().eval(), (torch.zeros(2, 4),)), str(model))
    checked = exported.check_pt2_payloads
    seen = []
    monkeypatch.setattr(
        exported, "check_pt2_payloads", lambda path, allow: seen.append(Path(path)) or checked(path, allow)
    )
    spec = build_spec_from_options(model, repo=tmp_path / "repo")
    assert [t.name for t in spec.inputs] and seen and all(p != model for p in seen)


def test_a_file_that_turns_into_onnx_while_it_is_read_is_refused(tmp_path, monkeypatch):
    """ONNX is read from its path again later: a file that was TorchScript at the first look and ONNX in the copy
    left the build holding a path whose bytes were never checked."""
    import tritongen.load as load

    model = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(model))
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    onnx_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    assert onnx.load_from_string(onnx_bytes).graph.node
    monkeypatch.setattr(load, "_copy_once", lambda path, copy: copy.write_bytes(onnx_bytes))
    with pytest.raises(TritongenError, match=rf"{re.escape(str(model))} changed while it was read"):
        module_from_file(model)
