"""Fuzz test (issue 10): seeded random mutations of five valid inputs through ``tritongen build``, in-process.

For each of a TorchScript file, a torch.export ``.pt2``, a ``.safetensors`` state_dict (with ``--model-factory
tests.factories:make_tiny_linear``), an ``.npz`` of sample inputs and a YAML ``--spec``, :data:`MUTANTS` mutants
go through ``tritongen.cli.main(["build", ...])``: bytes flipped, cut, inserted or deleted; zip members repeated
(some copies code-running pickles), renamed (``..``, absolute, other case), refilled with such pickles or with
deflate bombs; zip header size fields overwritten; ``.npy`` and safetensors header fields changed; YAML values,
anchors and aliases put in. Each must end with exit 0 (a harmless mutant, built) or exit 1 and exactly one
``error:`` line; none may raise, run longer than :data:`CASE_LIMIT_S`, or create the marker file the pickles would.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tests.test_bad_input import RunsCode, _run
from tests.zip_craft import Entry, deflate_bomb, raw_zip

SEED = int(os.environ.get("TRITONGEN_FUZZ_SEED", "10"))  # fixed in CI; set it to explore other mutants
MUTANTS = int(os.environ.get("TRITONGEN_FUZZ_MUTANTS", "300"))
CASE_LIMIT_S = 30
TWO = ["--input", "a:FP32:4", "--input", "b:FP32:4", "--max-batch-size", "2"]
SPEC = """\
name: fuzzed
max_batch_size: 2
inputs:
  - {name: a, dtype: FP32, dims: [4]}
  - {name: b, dtype: FP32, dims: [4]}
outputs: [total, product]
atol: 0.0001
rtol: 0.001
opset: 18
instance_count: 1
preferred_batch_sizes: [2]
max_queue_delay_us: 100
warmup: true
dynamic_dim_size: 4
"""
_NUMBERS = (0, 1, 2, 7, 255, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 3 * 2**30, 2**63 - 1)
_YAML_TOKENS = (
    "&a x",
    "*a",
    "[",
    "]",
    "{",
    "}",
    "-1",
    "0",
    "1e400",
    ".nan",
    "'x'",
    "~",
    "99999999999999999999",
    "!!python/object/apply:os.system ['true']",
    "[[[[[[[[",
    "a: &b [1, 2]",
    "*b",
    "!!binary aGk=",
    "2020-13-45",
    "FP64",
    "STRING",
    "[4, 4]",
    "{name: c}",
    "true",
    "yes",
    "''",
    "\t",
)
_NPY_SHAPES = (
    "()",
    "(2,)",
    "(2, 4)",
    "(4, 2)",
    "(2, 4000000000)",
    "(-2, -4)",
    "(0, 4)",
    "(1, 4)",
    "(2, 4, 1)",
    "(99999999999999999999,)",
    "('a',)",
    "(2.5, 4)",
)
_NPY_DESCRS = (
    "'<f4'",
    "'<f8'",
    "'>f4'",
    "'|O'",
    "'<i8'",
    "'|b1'",
    "'<U0'",
    "'|V0'",
    "[('a', '|O')]",
    "'<c8'",
    "'x'",
    "'<f2'",
    "[('a', '<f4')]",
)
_ST_DTYPES = ("F32", "F64", "F16", "BF16", "I64", "BOOL", "U8", "XX", "")
_ST_SHAPES = ([2, 4], [4, 2], [2], [], [0], [-1], [4000000000, 2], [2**62, 4], ["a"], None)


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` in the code under test swallows it."""


@dataclass
class Seeds:
    root: Path
    marker: Path
    evil: bytes  # a pickle that creates the marker when unpickled
    torchscript: Path
    pt2: Path
    safetensors: Path
    npz: Path
    spec: Path


# ------------------------------------------------------------------------------------------------ mutators


def _flip(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    return data[: rng.randrange(len(data))]


def _insert(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


def _delete(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 64) :]


def _number(old: int, width: int, rng: random.Random) -> int:
    value = rng.choice((*_NUMBERS, old + 1, old - 1, old * 2, old // 2, rng.randrange(2 ** (8 * width))))
    return value % 2 ** (8 * width)


# (signature, ((field offset, width), ...)): local header, central directory entry, end records.
_ZIP_FIELDS = (
    (b"PK\x03\x04", ((4, 2), (6, 2), (8, 2), (10, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2))),
    (b"PK\x01\x02", ((6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (34, 2), (42, 4))),
    (b"PK\x05\x06", ((4, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2))),
    (b"PK\x06\x06", ((4, 8), (24, 8), (32, 8), (40, 8), (48, 8))),
    (b"PK\x06\x07", ((4, 4), (8, 8), (16, 4))),
    (b"PK\x07\x08", ((4, 4), (8, 4), (12, 4))),
)


def _zip_field(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    """Overwrite one size, count, offset or flag field of a zip header with a boundary or random value."""
    spots = [(m.start(), fields) for sig, fields in _ZIP_FIELDS for m in re.finditer(re.escape(sig), data)]
    at, fields = rng.choice(spots)
    offset, width = rng.choice(fields)
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[width]
    if at + offset + width > len(data):
        return _flip(data, rng, seeds)
    (old,) = struct.unpack_from(fmt, data, at + offset)
    out = bytearray(data)
    struct.pack_into(fmt, out, at + offset, _number(old, width, rng))
    return bytes(out)


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def _zipped(members: list[tuple[str, bytes]]) -> bytes:
    return raw_zip(Entry(name.encode("utf-8", "surrogatepass"), payload) for name, payload in members)


def _other_name(name: str, names: list[str], rng: random.Random) -> str:
    return rng.choice(
        (
            rng.choice(names),
            name.upper(),
            name.swapcase(),
            name[:-1] + name[-1].upper(),
            "../" + name,
            "/" + name,
            name.replace("/", "\\"),
            name + "\x00",
            name + "/",
            "",
            name.replace("/", "//"),
            "C:" + name,
            name.split("/", 1)[-1],
            "other/" + name.split("/", 1)[-1],
            name + "\r",
            "./" + name,
            name + "\u2028",
        )
    )


def _zip_duplicate(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    """Repeat a member (same name or one differing in case), the copy benign, random or a code-running pickle."""
    members = _members(data)
    index = rng.randrange(len(members))
    name, payload = members[index]
    copy_name = rng.choice((name, name, name.swapcase(), name[:-2] + name[-2:].upper()))
    copy = rng.choice((payload, seeds.evil, seeds.evil, rng.randbytes(rng.randint(0, 64))))
    members.insert(rng.choice((index, index + 1, rng.randrange(len(members) + 1))), (copy_name, copy))
    return _zipped(members)


def _zip_rename(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    members = _members(data)
    names = [n for n, _ in members]
    index = rng.randrange(len(members))
    members[index] = (_other_name(members[index][0], names, rng), members[index][1])
    return _zipped(members)


def _zip_refill(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    """A member's content replaced: a code-running pickle, random bytes, nothing, or a deflate bomb (honest or
    lying about its size)."""
    members = _members(data)
    index = rng.randrange(len(members))
    name, payload = members[index]
    choice = rng.randrange(4)
    if choice < 3:
        members[index] = (name, (seeds.evil, rng.randbytes(rng.randint(0, 256)), b"")[choice])
        return _zipped(members)
    entries = [Entry(n.encode(), d) for n, d in members]
    entries[index] = Entry(
        name.encode(),
        payload,
        deflate=True,
        payload=deflate_bomb(rng.choice((1, 8, 64))),
        declared_bytes=rng.choice((len(payload), 2**20, 3 * 2**30, 2**40)),
    )
    return raw_zip(entries)


def _npy_header(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    """An .npy member's header with another shape, dtype or order (padding kept, so the data offset stays)."""
    members = _members(data)
    index = rng.randrange(len(members))
    name, payload = members[index]
    end = payload.find(b"\n") + 1
    header = payload[10:end].decode("latin-1")
    header = rng.choice(
        (
            lambda h: re.sub(r"'shape': \([^)]*\)", f"'shape': {rng.choice(_NPY_SHAPES)}", h),
            lambda h: re.sub(r"'descr': '[^']*'", f"'descr': {rng.choice(_NPY_DESCRS)}", h),
            lambda h: h.replace("False", rng.choice(("True", "1", "None"))),
            lambda h: h.replace("{", rng.choice(("[", "{'x': 1, ", "{{"))),
        )
    )(header).rstrip()
    header = header.ljust(max(end - 11, len(header))) + "\n"
    members[index] = (name, payload[:8] + struct.pack("<H", len(header)) + header.encode("latin-1") + payload[end:])
    return _zipped(members)


def _st_header(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    """A safetensors JSON header with a tensor's dtype, shape or data offsets changed (its length recomputed)."""
    (length,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + length])
    tensor = header[rng.choice([k for k in header if k != "__metadata__"])]
    field = rng.choice(("dtype", "shape", "data_offsets", "data_offsets", "extra"))
    if field == "dtype":
        tensor["dtype"] = rng.choice(_ST_DTYPES)
    elif field == "shape":
        tensor["shape"] = rng.choice(_ST_SHAPES)
    elif field == "data_offsets":
        tensor["data_offsets"] = [_number(v, 8, rng) for v in tensor["data_offsets"]]
    else:
        header[rng.choice(("__metadata__", "x" * 300, ""))] = rng.choice(({"a": 1}, {"format": "pt"}, [1], "s", None))
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data[8 + length :]


def _st_length(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    (length,) = struct.unpack_from("<Q", data)
    return struct.pack("<Q", _number(length, 8, rng)) + data[8:]


def _yaml_token(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    text = data.decode()
    spots = [m.span() for m in re.finditer(r"[A-Za-z0-9_.]+|[\[\]{}:,]", text)]
    start, end = rng.choice(spots)
    return (text[:start] + rng.choice(_YAML_TOKENS) + text[end:]).encode()


def _yaml_line(data: bytes, rng: random.Random, seeds: Seeds) -> bytes:
    lines = data.decode().splitlines(keepends=True)
    index = rng.randrange(len(lines))
    action = rng.randrange(3)
    if action == 0:
        lines.insert(index, lines[index])
    elif action == 1:
        del lines[index]
    else:
        lines.insert(
            index,
            rng.choice(
                (
                    "x: &x [1, 1, 1, 1]\n",
                    "y: [*x, *x, *x]\n",
                    "<<: {name: z}\n",
                    "- 5\n",
                    "inputs: 5\n",
                    "  - {name: c, dims: [1]}\n",
                    "outputs: *x\n",
                    "---\n",
                )
            ),
        )
    return "".join(lines).encode()


_BYTES = (_flip, _truncate, _insert, _delete)
_ZIP = (_zip_field, _zip_field, _zip_duplicate, _zip_rename, _zip_refill)
MUTATORS: dict[str, tuple[Callable[[bytes, random.Random, Seeds], bytes], ...]] = {
    "torchscript": _BYTES + _ZIP,
    "pt2": _BYTES + _ZIP,
    "safetensors": _BYTES + (_st_header, _st_header, _st_length),
    "npz": _BYTES + _ZIP + (_npy_header, _npy_header),
    "yaml": _BYTES + (_yaml_token, _yaml_token, _yaml_line, _yaml_line),
}


def _argv(kind: str, seeds: Seeds, mutant: Path) -> list[str]:
    if kind in ("torchscript", "pt2"):
        return ["build", str(mutant), *TWO]
    if kind == "safetensors":
        return [
            "build",
            str(mutant),
            "--input",
            "x:FP32:4",
            "--max-batch-size",
            "2",
            "--model-factory",
            "tests.factories:make_tiny_linear",
        ]
    if kind == "npz":
        return ["build", str(seeds.torchscript), "--max-batch-size", "2", "--sample-inputs", str(mutant)]
    return ["build", str(seeds.torchscript), "--spec", str(mutant)]


# ------------------------------------------------------------------------------------------------ the test


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("fuzz")
    marker = root / "PWNED"
    buffer = io.BytesIO()
    torch.save(RunsCode(str(marker)), buffer)
    two, inputs = factories.make_two_in_two_out(), factories.two_in_two_out_inputs()
    torchscript = factories.save_model(two, root / "two.pt", "torchscript-trace", inputs)
    pt2 = factories.save_model(two, root / "two.pt2", "torch.export", inputs)
    safetensors = root / "tiny.safetensors"
    save_file(factories.make_tiny_linear().state_dict(), str(safetensors))
    npz = root / "samples.npz"
    np.savez(npz, a=inputs[0].numpy(), b=inputs[1].numpy())
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    return Seeds(root, marker, buffer.getvalue(), torchscript, pt2, safetensors, npz, spec)


def _seed_file(kind: str, seeds: Seeds) -> Path:
    return {
        "torchscript": seeds.torchscript,
        "pt2": seeds.pt2,
        "safetensors": seeds.safetensors,
        "npz": seeds.npz,
        "yaml": seeds.spec,
    }[kind]


def _on_alarm(signum, frame):
    raise _Hang()


def _one_case(argv: list[str]) -> tuple[int, str]:
    """``(exit code, stderr)`` of one in-process build, or raises :class:`_Hang` after :data:`CASE_LIMIT_S`."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
    try:
        code, _out, err = _run(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, err


def _verdict(code: int, err: str) -> str | None:
    """What is wrong with how a build ended, or None."""
    if "Traceback" in err:
        return "traceback on stderr"
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if code == 0:
        return f"exit 0 with error lines {errors}" if errors else None
    if code != 1 or len(errors) != 1:
        return f"exit {code} with {len(errors)} error lines: {err[-400:]!r}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MUTATORS))
def test_mutants_end_cleanly_and_run_nothing(seeds, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    base = _seed_file(kind, seeds)
    code, err = _one_case([*_argv(kind, seeds, base), "--repo", str(tmp_path / "base_repo")])
    assert code == 0, f"the unmutated {kind} input does not build: {err[-600:]}"
    rng = random.Random(f"{SEED}-{kind}")
    data = base.read_bytes()
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    problems, built, started = [], 0, time.monotonic()
    for index in range(MUTANTS):
        mutator = rng.choice(MUTATORS[kind])
        mutant = tmp_path / f"mutant{base.suffix}"
        mutant.write_bytes(mutator(data, rng, seeds))
        repo = tmp_path / "repo"
        case = f"{kind} #{index} ({mutator.__name__})"
        try:
            code, err = _one_case([*_argv(kind, seeds, mutant), "--repo", str(repo)])
            problem = _verdict(code, err)
        except _Hang:
            problem = f"still running after {CASE_LIMIT_S}s"
        except Exception as exc:  # noqa: BLE001 -- any escape is the finding; keep going to report them all
            problem = f"raised {type(exc).__name__}: {str(exc)[:300]}"
            code = -1
        built += code == 0
        if seeds.marker.exists():
            problem = "code from the input ran (marker file created)"
            seeds.marker.unlink()
        if problem:
            keep = tmp_path / "failures" / f"{index}-{mutator.__name__}{base.suffix}"
            keep.parent.mkdir(exist_ok=True)
            shutil.copy(mutant, keep)
            problems.append(f"{case}: {problem} (mutant kept at {keep})")
        shutil.rmtree(repo, ignore_errors=True)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
    took_s = time.monotonic() - started
    print(f"{kind}: {MUTANTS} mutants, {built} built, {took_s:.1f}s, peak memory grew {grown_mib:.0f} MiB")
    assert not problems, "\n".join(problems[:20])
    assert grown_mib < 1024, f"{kind} mutants took the process's memory up by {grown_mib:.0f} MiB"
