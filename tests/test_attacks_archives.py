"""Issue 10's archive and bounded-work corpus: crafted zips, ``.npz`` samples and ``--spec`` files through the CLI.

Each case must end like every bad input (``tests/test_bad_input.py``): exit code 1, exactly one ``error:`` line,
no traceback, nothing written, the earlier build unchanged, and no code run (the marker file never appears).
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tests.test_bad_input import CONV, RunsCode, World, _assert_one_clean_line, _run, _snapshot
from tests.zip_craft import Entry, deflate_bomb, raw_zip, rezip

TWO = ["--input", "a:FP32:4", "--input", "b:FP32:4"]
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


@dataclass
class Files:
    world: World
    pt2: Path

    @property
    def root(self) -> Path:
        return self.world.root

    @property
    def marker(self) -> Path:
        return self.root / "PWNED"

    @functools.cached_property
    def evil_pickle(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(RunsCode(str(self.marker)), buffer)
        return buffer.getvalue()

    def pt2_with(self, name: str, edit: Callable[[str, bytes], list[tuple[str, bytes]]]) -> Path:
        return rezip(self.pt2, self.root / name, edit)

    def conv_with(self, name: str, extra: dict[str, bytes]) -> Path:
        def edit(member: str, data: bytes) -> list[tuple[str, bytes]]:
            return [(member, data)] + (list(extra.items()) if member.endswith("/version") else [])

        return rezip(self.world.conv, self.root / name, edit)

    def pt2_raw(self, name: str, replace: dict[str, Entry]) -> Path:
        """The .pt2 rewritten by :func:`raw_zip`, members whose names end with a key of ``replace`` replaced."""
        with zipfile.ZipFile(self.pt2) as zf:
            entries = [
                next((e for k, e in replace.items() if n.endswith(k)), None) or Entry(n.encode(), zf.read(n))
                for n in zf.namelist()
            ]
        path = self.root / name
        path.write_bytes(raw_zip(entries))
        return path

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_npy(shape: str) -> bytes:
    """A (2, 4) float32 .npy (32 bytes of data) whose header claims ``shape`` (the header keeps its padded length)."""
    good = _npy(np.zeros((2, 4), np.float32))
    start, end = good.index(b"{"), good.index(b"\n") + 1
    header = good[start:end].replace(b"'shape': (2, 4), }", f"'shape': {shape}, }}".encode()).rstrip()
    return good[:start] + header.ljust(end - start - 1) + b"\n" + good[end:]


def _npz(files: Files, name: str, entries: list[Entry]) -> list[str]:
    return ["build", str(files.world.conv), *CONV, "--sample-inputs", str(files.file(name, raw_zip(entries)))]


def _spec(files: Files, name: str, text: str) -> list[str]:
    return ["build", str(files.world.conv), "--spec", str(files.file(name, text))]


def _alias_bomb() -> str:
    lines = ["outputs:", "  - a0: &a0 [y, y, y, y, y, y, y, y, y]"]
    for level in range(1, 9):
        lines.append(f"    a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _duplicate(copies: str) -> Callable[[Files], list[str]]:
    """The .pt2 with its sample inputs stored as several same-named copies: B benign, E code-running."""

    def argv(f: Files) -> list[str]:
        evil = f.evil_pickle

        def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
            if not name.endswith(SAMPLE_INPUTS):
                return [(name, data)]
            return [(name, evil if c == "E" else data) for c in copies]

        return ["build", str(f.pt2_with(f"dup_{copies}.pt2", edit)), *TWO]

    return argv


def _case_variant(keep_benign: bool) -> Callable[[Files], list[str]]:
    """The .pt2 with a code-running copy of its sample inputs named ``model.PT``: torch's reader ignores case."""

    def argv(f: Files) -> list[str]:
        evil = f.evil_pickle

        def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
            if not name.endswith(SAMPLE_INPUTS):
                return [(name, data)]
            return ([(name, data)] if keep_benign else []) + [(name[:-2] + "PT", evil)]

        return ["build", str(f.pt2_with(f"case_{keep_benign}.pt2", edit)), *TWO]

    return argv


def _prepended(f: Files) -> list[str]:
    """Another zip in front of the model: Python's zipfile shifts every offset past it, torch's reader does not."""
    plain = rezip(f.world.conv, f.root / "plain.pt", lambda name, data: [(name, data)])  # zipfile's layout: no zip64
    path = f.file("prepended.pt", f.pt2.read_bytes() + plain.read_bytes())
    assert zipfile.ZipFile(path).namelist() == zipfile.ZipFile(plain).namelist()
    return ["build", str(path), *CONV]


def _commented(f: Files) -> list[str]:
    data = bytearray(f.world.conv.read_bytes())
    data[-2:] = struct.pack("<H", 7)
    return ["build", str(f.file("commented.pt", bytes(data) + b"comment")), *CONV]


def _conv_with(name: str, member: str, data: bytes = b"x") -> Callable[[Files], list[str]]:
    return lambda f: ["build", str(f.conv_with(name, {member: data})), *CONV]


def _symbolic_size_payload(f: Files) -> list[str]:
    """torch.export.load evaluates each symbolic size text with sympy.sympify, that is as Python: a crafted one ran
    code while the build reported success (an attack session)."""
    import re

    def edit(member: str, data: bytes) -> list[tuple[str, bytes]]:
        if member.endswith("models/model.json"):
            found = re.search(rb"Symbol\('s\d+', positive=True, integer=True\)", data)
            assert found is not None, "the sample .pt2 has no symbolic size"
            payload = b"(__import__('os').system('touch " + str(f.marker).encode() + b"'), " + found.group(0) + b")[1]"
            data = data.replace(found.group(0), payload)
        return [(member, data)]

    return ["build", str(f.pt2_with("sympy.pt2", edit)), *TWO]


def _pt2_raw(name: str, member: str, entry: Entry) -> Callable[[Files], list[str]]:
    return lambda f: ["build", str(f.pt2_raw(name, {member: entry})), *TWO]


def _npy_file(name: str, data: bytes) -> Callable[[Files], list[str]]:
    return lambda f: ["build", str(f.world.conv), *CONV, "--sample-inputs", str(f.file(name, data))]


CONV_SAMPLES = _npy(np.zeros((2, 3, 32, 32), np.float32))
BOMB_3GB = dict(deflate=True, payload=deflate_bomb(3072), declared_bytes=3 * 2**30, crc=0)
OBJECT_FIELDS = _lying_npy("(2, 4)").replace(b"'descr': '<f4'", b"'descr': [('a', '|O')]")
ONE_INPUT = "inputs: [{name: x, dims: [3, 32, 32]}]\n"

# (case id, argv builder, words the error line must contain)
CASES: list[tuple[str, Callable[[Files], list[str]], tuple[str, ...]]] = [
    ("pt2: a symbolic size that runs code", _symbolic_size_payload, ("a symbolic size that holds a Subscript",)),
    ("pt2: two same-named sample inputs, the code-running one in the middle", _duplicate("BEB"), ("two members",)),
    ("pt2: two same-named sample inputs, the code-running one first", _duplicate("EB"), ("two members",)),
    ("pt2: a code-running copy whose name differs only in case", _case_variant(True), ("two members", "ignores case")),
    ("pt2: the only sample inputs named in other case, code-running", _case_variant(False), ("--allow-pickle",)),
    ("zip member named with ../", _conv_with("dotdot.pt", "conv/../../evil.py"), ("'..'",)),
    ("zip member with an absolute name", _conv_with("abs.pt", "/tmp/evil.py"), ("absolute",)),
    ("zip member named with backslashes", _conv_with("bs.pt", "conv\\..\\evil.py"), ("backslash",)),
    ("zip members whose names differ only in case", _conv_with("case.pt", "conv/Version", b"3\n"), ("ignores case",)),
    (
        "pt2 whose archive_format inflates to 3 GB",
        _pt2_raw("bomb.pt2", "archive_format", Entry(b"archive/archive_format", **BOMB_3GB)),
        ("unpacked",),
    ),
    (
        "pt2 whose archive_format declares 3 bytes and inflates to 64 MB",
        _pt2_raw(
            "liar.pt2",
            "archive_format",
            Entry(b"archive/archive_format", b"pt2", deflate=True, payload=deflate_bomb(64)),
        ),
        ("unpacks to more",),
    ),
    (
        "zip member declaring 40 GiB",
        _pt2_raw(
            "huge.pt2",
            "archive_version",
            Entry(b"archive/archive_version", deflate=True, payload=deflate_bomb(1), declared_bytes=40 * 2**30, crc=0),
        ),
        ("declares",),
    ),
    ("another zip prepended to the model", _prepended, ("does not end where its end record says",)),
    ("zip with a comment after its end record", _commented, ("comment",)),
    ("spec: YAML alias bomb inside outputs", lambda f: _spec(f, "bomb.yaml", _alias_bomb()), ("anchor or alias",)),
    (
        "spec: dims that are a word",
        lambda f: _spec(f, "dims.yaml", "inputs: [{name: x, dtype: FP32, dims: 'x'}]\n"),
        ("dims",),
    ),
    ("spec: inputs that are a number", lambda f: _spec(f, "inputs.yaml", "inputs: 5\n"), ("'inputs' is 5",)),
    (
        "spec: max_batch_size that is a word",
        lambda f: _spec(f, "mbs.yaml", "max_batch_size: a\n" + ONE_INPUT),
        ("max_batch_size",),
    ),
    (
        "spec: a word among the dims",
        lambda f: _spec(f, "dims2.yaml", "inputs: [{name: x, dtype: FP32, dims: [3, a, 32]}]\n"),
        ("dims",),
    ),
    (
        "spec: outputs entry without a name",
        lambda f: _spec(f, "outs.yaml", ONE_INPUT + "outputs: [{nam: y}]\n"),
        ("output #1",),
    ),
    ("spec: warmup that is a word", lambda f: _spec(f, "warm.yaml", ONE_INPUT + "warmup: 'yes'\n"), ("warmup",)),
    (
        "spec: a Python tag that would run code",
        lambda f: _spec(f, "tag.yaml", f"name: !!python/object/apply:os.system ['touch {f.marker}']\n"),
        ("not valid YAML",),
    ),
    (
        "spec: a batch of a terabyte",
        lambda f: _spec(f, "tb.yaml", "max_batch_size: 100000000\n" + ONE_INPUT),
        ("bytes",),
    ),
    (
        "npz: header claims (2, 4e9)",
        lambda f: _npz(f, "lie.npz", [Entry(b"x.npy", _lying_npy("(2, 4000000000)"))]),
        ("claims shape",),
    ),
    (
        "npz: header claims fewer bytes than it holds",
        lambda f: _npz(f, "short.npz", [Entry(b"x.npy", _lying_npy("(1,)"))]),
        ("holds 32 bytes",),
    ),
    (
        "npz: object fields in a structured dtype",
        lambda f: _npz(f, "obj.npz", [Entry(b"x.npy", OBJECT_FIELDS)]),
        ("pickled objects",),
    ),
    (
        "npz: two arrays with one name",
        lambda f: _npz(f, "dup.npz", [Entry(b"x.npy", CONV_SAMPLES)] * 2),
        ("two members",),
    ),
    ("npz: an array inflating to 3 GB", lambda f: _npz(f, "bomb.npz", [Entry(b"x.npy", **BOMB_3GB)]), ("unpacked",)),
    (
        "npz: a member that is not an array",
        lambda f: _npz(f, "txt.npz", [Entry(b"x.npy", CONV_SAMPLES), Entry(b"notes.txt", b"hi")]),
        ("not an array",),
    ),
    (".npy: header claims (2, 4e9)", _npy_file("lie.npy", _lying_npy("(2, 4000000000)")), ("claims shape",)),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    world = World(tmp_path_factory.mktemp("attacks"))
    pt2 = factories.save_model(
        factories.make_two_in_two_out(), world.root / "two.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    return Files(world, pt2)


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_attack_gets_one_clean_line_and_runs_nothing(files, tmp_path, monkeypatch, case, argv, words):
    monkeypatch.chdir(tmp_path)  # the default repository folder is ./model_repository
    repo = files.world.repo
    before = _snapshot(repo)
    code, out, err = _run(argv(files))
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1
    assert not files.marker.exists(), "code from the input ran"
    assert not (tmp_path / "model_repository").exists(), "partial repository left behind"
    assert _snapshot(repo) == before, "an earlier build was changed"
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "staging folder left behind"


def test_zipfile_and_torch_read_different_copies_of_a_duplicated_member(files):
    """The premise of the duplicate cases: for some order of same-named copies, Python's zipfile (which the old
    check used) reads a benign copy while torch's reader, which loads the model, reads the code-running one."""
    fooled = []
    for copies in ("EB", "BEB", "EBB", "BEBB", "BBEB", "BBBEB"):
        path = Path(_duplicate(copies)(files)[1])
        with zipfile.ZipFile(path) as zf:
            checked = zf.read(f"archive/{SAMPLE_INPUTS}")
        loaded = bytes(torch._C.PyTorchFileReader(str(path)).get_record(SAMPLE_INPUTS))
        if checked != files.evil_pickle and loaded == files.evil_pickle:
            fooled.append(copies)
    assert fooled


def test_corpus_is_large_enough():
    assert len(CASES) >= 25
