"""The archive reader (``tritongen.archive``) reads what the libraries write, exactly as ``zipfile`` does, and
refuses what readers could disagree on (the CLI-level attack cases are in ``tests/test_attacks_archives.py``)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tests.zip_craft import Entry, deflate_bomb, deflate_raw, raw_zip
from tritongen.archive import open_archive
from tritongen.errors import TritongenError


def _open(path: Path, verify: bool = True):
    return open_archive(path, "test file", "make it again", verify=verify)


def _written(kind: str, path: Path) -> Path:
    two, inputs = factories.make_two_in_two_out(), factories.two_in_two_out_inputs()
    if kind == "torch.jit.save":
        return factories.save_model(two, path, "torchscript-trace", inputs)
    if kind == "torch.export.save":
        return factories.save_model(two, path, "torch.export", inputs)
    if kind == "torch.save":
        torch.save(factories.make_tiny_linear().state_dict(), path)
    elif kind == "numpy.savez":
        np.savez(path, a=np.arange(12.0).reshape(3, 4), b=np.array(["x", "yz"]))
    elif kind == "numpy.savez_compressed":
        np.savez_compressed(path, a=np.zeros((64, 64)))
    elif kind == "zipfile deflated, streamed":  # sizes in data descriptors after each member
        with open(path, "wb") as raw, zipfile.ZipFile(_Unseekable(raw), "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("m/a.txt", "hello " * 500)
            with zf.open("m/b.bin", "w", force_zip64=True) as member:
                member.write(bytes(range(256)) * 40)
    return path


class _Unseekable(io.RawIOBase):
    def __init__(self, raw) -> None:
        self.raw = raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.raw.write(data)


KINDS = (
    "torch.jit.save",
    "torch.export.save",
    "torch.save",
    "numpy.savez",
    "numpy.savez_compressed",
    "zipfile deflated, streamed",
)


@pytest.mark.parametrize("kind", KINDS)
def test_reads_what_the_libraries_write_as_zipfile_does(tmp_path, kind):
    path = _written(kind, tmp_path / "archive.npz")  # numpy adds .npz to any other name
    with _open(path) as archive, zipfile.ZipFile(path) as zf:
        assert archive.names == zf.namelist()
        for name in archive.names:
            assert bytes(archive.read(name, 2**30)) == zf.read(name)


def test_read_refuses_a_member_above_its_limit(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(raw_zip([Entry(b"a/big", b"x" * 1000)]))
    with _open(path) as archive:
        assert len(archive.read("a/big", 1000)) == 1000
        with pytest.raises(TritongenError, match="declares 1000 bytes, more than the 999"):
            archive.read("a/big", 999)


@pytest.mark.parametrize(
    "entries, words",
    [
        ([Entry(b"a/x", b"abc", crc=1)], "checksum"),
        ([Entry(b"a/x", b"abc", deflate=True, payload=deflate_raw(b"abcd"))], "unpacks to more"),
        ([Entry(b"a/x", b"abcd", deflate=True, payload=deflate_raw(b"abc"))], "size or checksum"),
        ([Entry(b"a/x", b"abc", deflate=True, payload=b"\xff\xff\xff")], "damaged"),
        ([Entry(b"a/x", b"", deflate=True, payload=deflate_bomb(64), declared_bytes=2**20)], "unpacks to more"),
    ],
)
def test_verify_refuses_members_that_lie(tmp_path, entries, words):
    path = tmp_path / "a.zip"
    path.write_bytes(raw_zip(entries))
    with _open(path, verify=False):
        pass  # the directory alone is fine
    with pytest.raises(TritongenError, match=words):
        _open(path)


@pytest.mark.parametrize(
    "name, words",
    [
        (b"a/../b", "'..'"),
        (b"/a/b", "absolute"),
        (b"a//b", "empty"),
        (b"./a", "'.'"),
        (b"C:/a", "absolute"),
        (b"a\\b", "backslash"),
        (b"a/b\x00c", "control"),
        (b"a/b\rc", "control"),
        (b"a/\xe2\x80\xa8", "control"),
        (b"a/\xff", "UTF-8"),
        (b"", "empty"),
    ],
)
def test_refuses_member_names(tmp_path, name, words):
    path = tmp_path / "a.zip"
    path.write_bytes(raw_zip([Entry(name, b"x")]))
    with pytest.raises(TritongenError, match=words):
        _open(path)


def test_refuses_overlapping_members(tmp_path):
    """Two central directory entries pointing at one local header (zipfile would read both)."""
    data = bytearray(raw_zip([Entry(b"a/x", b"1"), Entry(b"a/y", b"1")]))
    second = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 1)
    data[second + 42 : second + 46] = b"\0\0\0\0"  # a/y's local header offset -> a/x's
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(TritongenError, match="differs|overlaps"):
        _open(path)


def test_refuses_more_entries_than_the_end_record_counts(tmp_path):
    """zipfile walks the central directory by its size, miniz (torch) by the entry count."""
    data = bytearray(raw_zip([Entry(b"a/x", b"1"), Entry(b"a/y", b"2")]))
    end = len(data) - 22
    data[end + 8 : end + 12] = b"\x01\x00\x01\x00"
    path = tmp_path / "a.zip"
    path.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(path).namelist()) == 2
    with pytest.raises(TritongenError, match="more than its entry count"):
        _open(path)


def test_refuses_too_many_members_before_reading_them(tmp_path, monkeypatch):
    import tritongen.archive as archive

    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    path = tmp_path / "a.zip"
    path.write_bytes(raw_zip([Entry(f"a/{i}".encode(), b"") for i in range(4)]))
    with pytest.raises(TritongenError, match="declares 4 members"):
        _open(path)
