"""Poll mode: ``tritongen build --new-version`` into the repository a server polls is picked up while requests keep
coming; the version folder appears whole (one rename out of the build's staging folder) and no request fails."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tests.conftest import free_ports
from tritongen.errors import TritongenError
from tritongen.repository import exchange_paths, swap_into_place
from tritongen.server import ServeSpec, server_args

CONCURRENCY = 8
SWITCH_TIMEOUT_S = 120.0


def test_poll_mode_arguments():
    spec = ServeSpec(repo=Path("."), model_control="poll", poll_interval_s=2)
    args = server_args(spec, {"http": 1, "grpc": 2, "metrics": 3})
    assert "--model-control-mode=poll" in args and "--repository-poll-secs=2" in args
    assert "--load-model=*" not in args
    for bad in (0, 1.5, True):
        with pytest.raises(TritongenError, match="poll interval"):
            ServeSpec(repo=Path("."), model_control="poll", poll_interval_s=bad)
    with pytest.raises(TritongenError, match="model control mode 'polling' is not supported"):
        ServeSpec(repo=Path("."), model_control="polling")


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's")
def test_shared_folders_are_exchanged_in_one_step(tmp_path):
    new, old, trash = tmp_path / "new", tmp_path / "warmup", tmp_path / "trash"
    for folder, text in ((new, "2"), (old, "1")):
        folder.mkdir()
        (folder / "x").write_text(text)
    trash.mkdir()
    assert exchange_paths(new, old), "renameat2(RENAME_EXCHANGE) is missing: shared folders are swapped in 2 steps"
    exchange_paths(new, old)  # back
    swap_into_place(new, old, trash)
    assert (old / "x").read_text() == "2" and (trash / "warmup" / "x").read_text() == "1" and not new.exists()


def _listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size (the Python stub's ``__pycache__`` left out: the server writes it)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(root) / name
            try:
                out[str(path.relative_to(folder))] = path.stat().st_size
            except FileNotFoundError:
                out[str(path.relative_to(folder))] = -1
    return out


@pytest.mark.server
def test_new_version_is_picked_up_without_a_failed_request(tmp_path, server_install):
    import tritonclient.grpc as grpcclient

    import tritongen
    from tritongen.client import Triton
    from tritongen.server import server_from_repository

    repo = tmp_path / "repo"
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    models = {1: factories.make_tiny_linear(0), 2: factories.make_tiny_linear(1)}
    with torch.no_grad():
        want = {v: m(torch.from_numpy(x)).numpy() for v, m in models.items()}
    assert not np.allclose(want[1], want[2], atol=1e-3)
    example = {"x": torch.from_numpy(np.repeat(x, 2, axis=0))}
    tritongen.build(models[1], example_inputs=example, name="lin", max_batch_size=8, repo=repo)
    assert "version_policy" not in (repo / "lin" / "config.pbtxt").read_text()  # Triton's default: the latest one

    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(
        repo=repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        model_control="poll",
        ready_timeout_s=120,
        log_path=tmp_path / "server.log",
    )
    answers: list[tuple[float, float, str]] = []  # (sent, answered, "v1" | "v2" | "other" | "error: ...")
    stop = threading.Event()
    seen: dict[str, int] = {}

    def client() -> None:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                y = triton.infer("lin", [tensor], client_timeout=30).as_numpy("output")
                kind = next((f"v{v}" for v, w in want.items() if np.allclose(y, w, atol=1e-4)), "other")
            except Exception as e:  # noqa: BLE001 - any failure is counted, and the test fails on it
                kind = f"error: {e}"
            answers.append((sent, time.monotonic(), kind))
        triton.close()

    def watch() -> None:  # the first sight of version 2's folder, listed at once
        version_dir = repo / "lin" / "2"
        while not stop.is_set() and not seen:
            if version_dir.is_dir():
                seen.update(_listing(version_dir))
                return
            time.sleep(0.0005)

    with server_from_repository(spec) as server:
        threads = [threading.Thread(target=client) for _ in range(CONCURRENCY)] + [threading.Thread(target=watch)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            assert answers and {k for _, _, k in answers} == {"v1"}, answers[:3]
            built_at = time.monotonic()
            result = tritongen.build(
                models[2], example_inputs=example, name="lin", max_batch_size=8, repo=repo, new_version=True
            )
            assert result.version == 2
            deadline = time.monotonic() + SWITCH_TIMEOUT_S
            while time.monotonic() < deadline:
                recent = [k for s, _, k in answers[-4 * CONCURRENCY :]]
                if len(recent) == 4 * CONCURRENCY and set(recent) == {"v2"}:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        with Triton(server.http_url) as triton:
            states = {e["version"]: e["state"] for e in triton.repository_index() if e["name"] == "lin"}

    log = (tmp_path / "server.log").read_text()
    loads = {v: log.count(f'"loading: lin:{v}"') for v in (1, 2)}
    kinds = [k for _, _, k in answers]
    failures = [k for k in kinds if k.startswith("error")]
    first_v2 = min(done for _, done, k in answers if k == "v2")
    late_v1 = [s for s, _, k in answers if k == "v1" and s > first_v2]
    print(
        f"poll swap: {len(answers)} requests at concurrency {CONCURRENCY}, {kinds.count('v1')} v1, "
        f"{kinds.count('v2')} v2, {len(failures)} failed; first v2 answer {first_v2 - built_at:.2f} s after the "
        f"build started; repository index {states}; loads seen in the log {loads}"
    )
    assert not failures, failures[:3]
    assert set(kinds) == {"v1", "v2"}, "an answer matched neither version's reference"
    assert kinds[-CONCURRENCY:] == ["v2"] * CONCURRENCY
    assert not late_v1, f"{len(late_v1)} requests sent after v2 answered got v1"
    # the version folder was whole the first time it could be seen: every file, at its final size
    assert seen == _listing(repo / "lin" / "2") and "model.onnx" in seen and min(seen.values()) > 0, seen
    assert states.get("2") == "READY" and states.get("1") != "READY", states
    assert not [p for p in [*repo.iterdir(), *tmp_path.iterdir()] if p.name.startswith(".")], "staging folder left"
    # the build staged beside the repository: the polling server never tried to load its staging folder as a model
    assert ".tritongen-staging" not in log
    # each version loads once when it appears and once more when its Python stub writes __pycache__ beside model.py
    # (a change to the polled folder; the stub ignores PYTHONDONTWRITEBYTECODE): both without a failed request
    assert loads[2] in (1, 2, 3), loads
