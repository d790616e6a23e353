"""What the server serves when ``tune`` ends, against a real tritonserver started as ``tritongen serve`` starts it
(a checked copy of the repository, explicit model control): after a written run, a dry run, a run whose winner is
the starting config, Ctrl-C and SIGTERM, Triton's model-config API must report config.pbtxt's settings, not the
last candidate tune measured.

The model answers each execution after 20 ms whatever its batch holds, so a config with a larger max batch size
serves several times more (latency by design, not this machine's timing); the p99 bound is far above anything it
reaches."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import sleepy_model, write_model
from tritongen.client import Triton
from tritongen.perf.tune import TuneSpec, tune_model
from tritongen.validate import config_from_file

pytestmark = pytest.mark.server

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 1
input [{{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }}]
output [{{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }}]
dynamic_batching {{ max_queue_delay_microseconds: 0 }}
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""
MODELS = ("dry", "written", "same", "ctrlc", "term", "rolledback")
ROLLED_BACK = {  # version 2 was rolled back: serve pins version 1 from the record, and tune must keep it
    "tool": "tritongen-rollout",
    "model": "rolledback",
    "live": 1,
    "previous": 2,
    "pending": None,
    "history": [{"at": "2026-12-06T09:00:00Z", "action": "rollback", "from": 2, "to": 1, "result": "promoted"}],
}


@pytest.fixture(scope="module")
def served(server_install, tmp_path_factory):
    import tritongen

    work = tmp_path_factory.mktemp("tune_server")
    repo = work / "repo"
    for name in MODELS:
        write_model(repo, name, CONFIG.format(name=name), sleepy_model(0.02))
    (repo / "rolledback" / "2").mkdir()
    (repo / "rolledback" / "2" / "model.py").write_text(sleepy_model(0.02))
    (repo / "rolledback" / "tritongen-rollout.json").write_text(json.dumps(ROLLED_BACK))
    np.savez(work / "x.npz", X=np.ones((8, 4), np.float32))
    # As `tritongen serve --model-control explicit` serves it: Triton reads a checked copy, which tune never writes.
    with tritongen.serve(repo, allow_unverified=list(MODELS), model_control="explicit", ready_timeout_s=180) as server:
        yield server, repo, work / "x.npz"


def _quick(served, name: str, **options) -> TuneSpec:
    server, repo, inputs = served
    settings = {
        "max_p99_ms": 2000.0,
        "url": server.grpc_url,
        "max_instances": 1,
        "queue_delays_us": (0,),
        "max_batch_sizes": (1, 8),
        "max_concurrency": 8,
        "duration_s": 0.5,
        "warmup_s": 0.2,
        "load_warmup_s": 0.2,
        "confirm_engine": "builtin",
        "confirm_duration_s": 1.0,
        "confirm_paired": False,
        "paired_descent": False,
        "budget_s": 120.0,
        "input_data": inputs,
        **options,
    }
    return TuneSpec(model_dir=repo / name, **settings)


def _settings(config) -> tuple[int, list[int], int]:
    """(max batch size, preferred batch sizes, instances) of a ModelConfig, as Triton reports them: Triton fills
    in no preferred sizes with the max batch size."""
    return (
        int(config.max_batch_size),
        list(config.dynamic_batching.preferred_batch_size) or [int(config.max_batch_size)],
        sum(g.count for g in config.instance_group),
    )


def _served(server, name: str) -> tuple[int, list[int], int]:
    """The same three, as Triton's model-config API reports what it serves now."""
    with Triton(server.grpc_url, "grpc") as triton:
        config = triton.model_config(name)
    batching = config.get("dynamic_batching", config.get("dynamicBatching", {}))
    preferred = batching.get("preferred_batch_size", batching.get("preferredBatchSize", []))
    groups = config.get("instance_group", config.get("instanceGroup", []))
    return (
        int(config.get("max_batch_size", config.get("maxBatchSize", 0))),
        [int(b) for b in preferred],
        sum(int(g.get("count", 1)) for g in groups),
    )


def test_after_a_dry_run_the_server_serves_config_pbtxt_not_the_last_config_measured(served):
    server, repo, _ = served
    before = (repo / "dry" / "config.pbtxt").read_bytes()
    result = tune_model(_quick(served, "dry", write=False))
    assert len(result.trials) >= 2, "tune measured only the starting config: nothing else was loaded"
    assert result.winner is not None and result.winner.candidate.max_batch_size == 8  # 8 per 20 ms against 1
    assert (repo / "dry" / "config.pbtxt").read_bytes() == before and result.config_path is None
    assert _served(server, "dry") == _settings(config_from_file(repo / "dry" / "config.pbtxt")) == (1, [1], 1)
    assert result.served.startswith("the server now serves dry with config.pbtxt's config (instances=1")


def test_after_a_written_run_the_server_serves_the_written_config(served, monkeypatch):
    """The configs are loaded into the real server; their figures are set by config, so that the winner (max batch
    8, no preferred sizes) is not the config loaded last (the descent then tries preferred sizes 4,8, which lose).
    Measured, the two serve this model alike and either could win by the 3% margin: the premise was the machine's
    luck (preferred 4,8 won once under load, and was the config loaded last)."""
    from tritongen.perf import run
    from tritongen.perf.results import LatencySummary, PerfPoint

    server, repo, _ = served
    loaded: list[str] = []
    figures = {
        "max_batch=1 preferred=none": 40.0,
        "max_batch=8 preferred=none": 400.0,
        "max_batch=8 preferred=4,8": 300.0,
    }

    def measured(level, requests):
        rps = next(v for k, v in figures.items() if loaded[-1].endswith(k))
        load = level.concurrency[0]
        return [PerfPoint("concurrency", load, "builtin", rps, LatencySummary(1, 1, 1, 1, 5.0, None), 100)]

    monkeypatch.setattr(run, "points_from_engine", measured)
    # Unconfirmed: the winner is the descent's best, and the descent ends by measuring neighbours that do not beat
    # it, so the config loaded last is not the one written.
    result = tune_model(
        _quick(served, "written", confirm=False),
        lambda m: loaded.append(m.split(": ", 1)[1]) if m.startswith("config ") else None,
    )
    assert result.config_path == repo / "written" / "config.pbtxt" and not result.unchanged
    assert loaded[-1].endswith("max_batch=8 preferred=4,8"), loaded
    assert result.winner is not None and result.winner.candidate.label().endswith("max_batch=8 preferred=none")
    written = config_from_file(result.config_path)
    assert _settings(written)[0] == 8 and _served(server, "written") == _settings(written)
    assert "the tuned config written to config.pbtxt" in result.served


def test_a_winner_that_is_the_starting_config_leaves_config_pbtxt_as_it_was(served):
    server, repo, _ = served
    path = repo / "same" / "config.pbtxt"
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    # No budget left after the first point: only the starting config is measured (and measured again), so it wins.
    result = tune_model(_quick(served, "same", budget_s=0.001))
    assert result.winner is not None and result.winner.candidate == result.baseline.candidate
    assert result.unchanged and result.config_path is None and result.record_path is None and result.meets_constraints
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert not list((repo / "same").glob("*/tritongen/tune.json"))
    assert _served(server, "same") == (1, [1], 1)
    assert "(the starting config)" in result.table()


def test_ctrl_c_during_tune_puts_the_server_back_on_config_pbtxt(served):
    server, repo, _ = served
    lines: list[str] = []

    def progress(message: str) -> None:
        lines.append(message)
        if message.startswith("config 2:"):  # a second config (max batch 8) has just been loaded
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune_model(_quick(served, "ctrlc"), progress)
    assert any(line.startswith("config 2:") and "max_batch=8" in line for line in lines), lines
    assert _served(server, "ctrlc") == (1, [1], 1), lines
    assert lines[-1].startswith("tune stopped: the server now serves ctrlc with config.pbtxt's config"), lines


def test_sigterm_during_tune_is_taken_as_ctrl_c(served):
    server, repo, inputs = served
    command = [
        sys.executable,
        "-m",
        "tritongen",
        "tune",
        str(repo / "term"),
        "--max-p99-ms=2000",
        f"--url={server.grpc_url}",
        "--max-instances=1",
        "--max-concurrency=8",
        "--duration-s=0.5",
        "--confirm-engine=builtin",
        f"--input-data={inputs}",
        "--dry-run",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    err: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:  # wait for the second config (max batch 2) to be loaded
        err.append(line)
        if line.startswith("config 2:"):
            process.send_signal(signal.SIGTERM)
            break
    timer = threading.Timer(120, process.kill)
    timer.start()
    try:
        out, rest = process.communicate()
    finally:
        timer.cancel()
    err.append(rest)
    text = "".join(err)
    assert process.returncode == 143, (process.returncode, text)
    assert "tune stopped: the server now serves term with config.pbtxt's config" in text and "aborted" in text, text
    assert _served(server, "term") == (1, [1], 1), text


def test_tune_keeps_the_version_the_server_serves(served):
    """After a rollback (pinned by serve from the rollout record), a candidate loaded with config.pbtxt's own policy
    brought the newest version back, and tune left it serving; its written config must not pin anything either."""
    server, repo, _ = served
    with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
        assert triton.ready_versions("rolledback") == [1]
    result = tune_model(_quick(served, "rolledback", confirm=False))
    assert len(result.trials) >= 2 and result.config_path is not None
    with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
        assert triton.ready_versions("rolledback") == [1]
    assert not config_from_file(result.config_path).HasField("version_policy")
