"""tritongen.server.allocator: which malloc tritonserver is started with, and that the real server runs with it."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, free_ports, write_model
from tritongen.errors import TritongenError
from tritongen.server import ServeSpec, server_from_repository
from tritongen.server.allocator import (
    LIBRARY_DIRS,
    allocator_from_library,
    library_from_allocator,
    preload_environ,
)


def _libs(tmp_path: Path, *names: str) -> tuple[str, ...]:
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
    for name in names:
        folder = first if name.startswith("libtcmalloc") else second
        (folder / name).write_bytes(b"\x7fELF")
    return (str(first), str(second))


def test_auto_prefers_jemalloc_then_tcmalloc_then_the_system(tmp_path):
    dirs = _libs(tmp_path, "libtcmalloc_minimal.so.4", "libjemalloc.so.2")
    assert library_from_allocator("auto", dirs) == Path(dirs[1]) / "libjemalloc.so.2"
    (Path(dirs[1]) / "libjemalloc.so.2").unlink()
    assert library_from_allocator("auto", dirs) == Path(dirs[0]) / "libtcmalloc_minimal.so.4"
    (Path(dirs[0]) / "libtcmalloc.so.4").write_bytes(b"\x7fELF")  # the full tcmalloc before the minimal one
    assert library_from_allocator("tcmalloc", dirs) == Path(dirs[0]) / "libtcmalloc.so.4"
    for f in Path(dirs[0]).iterdir():
        f.unlink()
    assert library_from_allocator("auto", dirs) is None
    assert library_from_allocator("system", dirs) is None


def test_a_named_allocator_that_is_missing_or_unknown_is_one_clear_error(tmp_path):
    dirs = _libs(tmp_path, "libtcmalloc.so.4")
    with pytest.raises(TritongenError) as e:
        library_from_allocator("jemalloc", dirs)
    assert "jemalloc is not installed" in e.value.problem and "apt-get install libjemalloc2" in e.value.fix
    with pytest.raises(TritongenError, match="allocator 'mimalloc' is not known"):
        ServeSpec(repo=tmp_path, allocator="mimalloc")


def test_the_preloaded_library_goes_first_and_keeps_what_was_there():
    env = {"LD_PRELOAD": "/x/libfoo.so", "PATH": "/bin"}
    out = preload_environ(env, Path("/usr/lib/libjemalloc.so.2"))
    assert out["LD_PRELOAD"] == "/usr/lib/libjemalloc.so.2:/x/libfoo.so" and out["PATH"] == "/bin"
    assert env["LD_PRELOAD"] == "/x/libfoo.so"  # not changed in place
    assert preload_environ({}, Path("/l/libjemalloc.so.2")) == {"LD_PRELOAD": "/l/libjemalloc.so.2"}
    assert preload_environ(env, None) == env
    assert allocator_from_library(None) == "system"
    assert allocator_from_library(Path("/l/libtcmalloc_minimal.so.4")) == "tcmalloc"


@pytest.mark.server
@pytest.mark.parametrize("allocator", ["auto", "system"])
def test_the_real_server_runs_with_the_allocator_it_reports(tmp_path, server_install, allocator):
    expected = library_from_allocator(allocator, LIBRARY_DIRS)
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=tmp_path, http_port=http, grpc_port=grpc, metrics_port=metrics, allocator=allocator)
    with server_from_repository(spec) as server:
        mapped = {Path(m.path).name for m in psutil.Process(server.pid).memory_maps()}
        log_head = server.log_path.read_text().splitlines()[0]
    assert server.allocator_library == expected
    if expected is None:
        assert server.allocator == "system"
        assert not any("jemalloc" in m or "tcmalloc" in m for m in mapped)
        assert "LD_PRELOAD" not in log_head
    else:
        assert expected.name in mapped, f"{expected.name} is not mapped into tritonserver"
        assert log_head.startswith(f"$ LD_PRELOAD={expected} ")
